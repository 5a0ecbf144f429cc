"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/v1/openapi.json``.

Built as data here (not from docstrings) so that it can be read whole and
tested: the test suite runs schemathesis against it (no 5xx for any input).
docs/api.md is the prose version.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

VERSION = "1.0.0"

STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
NSTR = {"type": ["string", "null"]}
NINT = {"type": ["integer", "null"]}
TIME = {"type": ["string", "null"], "description": "ISO 8601 UTC, e.g. 2025-10-29T10:00:00.000Z"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["status", "data"],
            "properties": {"status": {"const": "success"}, "data": data}}


ERROR = _json(_ref("Error"), "error (Notimation envelope; `error` holds an inSIM code where one applies)")
AUTH_ERRORS = {"401": ERROR, "403": ERROR}
BEARER: list[dict[str, Any]] = [{"bearer": []}, {"api_key": []}]
NONE: list[dict[str, Any]] = []

INSIM_HEADER = {
    "description": "inSIM: an object; the older Ardary form: a list holding one object.",
    "oneOf": [_ref("Header"), {"type": "array", "items": _ref("Header"), "maxItems": 1}],
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["status", "message"], "properties": {
        "status": {"const": "error"}, "message": STR,
        "error": {"type": "array", "items": STR}}},
    "Header": {"type": "object", "properties": {
        "login": {"type": "string", "description": "the account's login (e-mail)"},
        "accessKey": {"type": "string", "description": "the account's access key (inSIM spelling)"},
        "accesskey": {"type": "string", "description": "the access key (Ardary spelling)"},
        "password": {"type": "string", "description": "the access key (seed 001's contact form)"},
        "date_to_send": {"type": "string", "description": "default send date, \"YYYY-MM-DD HH:mm:ss\""},
        "priority": {"type": "integer", "enum": [0, 1, 2], "description": "default priority (Ardary)"},
        "mode": {"type": "string", "enum": ["prod", "test"], "description": "test: answer only, nothing sent"},
        "sender_name": STR, "sender_mode": STR,
        "type": {"type": "string", "description": "click-to-call: \"clicToCall\""},
        "phone_number": {"type": "string", "description": "click-to-call: the number to call"},
    }},
    "Message": {"type": "object", "properties": {
        "phone_number": {"type": "string", "description": "international format, +33612345678"},
        "phonenumber": {"type": "string", "description": "Ardary spelling of phone_number"},
        "message": {"type": "string", "maxLength": 5000,
                    "description": "[Lien_Tracking], [Lien] or [Link] become the tracked link of `url`"},
        "url": {"type": "string", "description": "URL to track"},
        "priorite": {"type": "integer", "enum": [0, 1, 2]},
        "priority": {"type": "integer", "enum": [0, 1, 2]},
        "date_to_send": {"type": "string", "description": "\"YYYY-MM-DD HH:mm:ss\" in the API's time zone"},
        "id_sms_api": {"type": "string", "maxLength": 64, "description": "your id; an idempotency key"},
    }},
    "SendSmsRequest": {"type": "object", "required": ["header", "messages"], "properties": {
        "header": INSIM_HEADER, "messages": {"type": "array", "items": _ref("Message")}}},
    "SendSmsResult": {"type": "object", "required": ["id_sms_api", "sms_per_message", "phone_number", "sent"],
                      "properties": {
        "id_sms_api": NSTR, "sms_per_message": INT, "user": NSTR, "sent_time": TIME,
        "phone_number": STR, "phonenumber": STR, "message": STR, "sent": {"type": "integer", "enum": [0, 1]},
        "error": {"type": "array", "items": STR, "description": "#001 #002 #003 #004 #006 #007 #009"},
        "error_message": STR, "mode": STR}},
    "Contact": {"type": "object", "properties": {
        "phone_number": STR, "phonenumber": STR, "firstname": STR, "first_name": STR, "lastname": STR,
        "last_name": STR, "email": STR, "adress": STR, "address": STR, "countryCode": STR, "country_code": STR}},
    "ContactRequest": {"type": "object", "required": ["header", "contacts"], "properties": {
        "header": INSIM_HEADER, "contacts": {"type": "array", "items": _ref("Contact")}}},
    "ContactResult": {"type": "object", "required": ["result"], "properties": {
        "firstname": STR, "lastname": STR, "phonenumber": STR, "email": STR, "adress": STR,
        "result": {"enum": ["success", "failed"]}, "errors": {"type": "array", "items": STR},
        "error_message": STR, "created": BOOL}},
    "CallRequest": {"type": "object", "required": ["header"], "properties": {"header": INSIM_HEADER}},
    "CallResult": {"type": "object", "required": ["info", "result", "errors"], "properties": {
        "info": STR, "result": {"enum": ["success", "failed"]}, "errors": {"type": "array", "items": STR},
        "id_sms_api": STR, "error_message": STR}},
    "QualificationRequest": {"type": "object", "required": ["phone_number", "qualification"], "properties": {
        "phone_number": STR, "qualification": {"type": "string", "maxLength": 10000},
        "header": INSIM_HEADER}},
    "PhoneNumber": {"type": "object", "properties": {
        "number": STR, "formatted_number": NSTR, "international_number": NSTR, "is_mobile": BOOL,
        "is_invalid": BOOL, "invalid_reason": NSTR, "operator": NSTR, "city": NSTR, "country": NSTR,
        "type": STR}},
    "Sms": {"type": "object", "required": ["id", "direction", "phone_number", "content", "status"], "properties": {
        "id": {"type": "integer", "description": "Notimation's numeric id: 2n for outgoing job n, "
                                                 "2n+1 for inbound SMS n"},
        "id_sms_api": NSTR, "direction": {"enum": ["outbound", "inbound"]}, "type": STR,
        "phone_number": _ref("PhoneNumber"), "content": STR,
        "status": {"enum": ["pending", "cancelled", "queued", "dispatched", "sent", "error", "received"]},
        "state": {"type": "string", "description": "simbridge's own job state (extension)"},
        "status_message": NSTR, "created_at": TIME, "programmed_at": TIME, "sent_at": TIME, "updated_at": TIME,
        "history": {"type": "array", "items": {"type": "object"}}}},
    "NotimationCreate": {"type": "object", "required": ["recipient", "message"], "properties": {
        "recipient": {"oneOf": [STR, INT], "description": "the number; national numbers read in "
                                                         "api.default_region"},
        "message": STR, "api_key": STR}},
    "CodeRequest": {"type": "object", "required": ["phone_number"], "properties": {
        "phone_number": STR,
        "timeout": {"type": "integer", "minimum": 30, "maximum": 86400, "description": "validity, s (900)"},
        "length": {"type": "integer", "minimum": 4, "maximum": 10},
        "message": {"type": "string", "description": "text of the SMS; must contain {code}"}}},
    "VerifyRequest": {"type": "object", "required": ["phone_number", "code"], "properties": {
        "phone_number": STR, "code": STR, "id": INT}},
    "Code": {"type": "object", "required": ["id", "phone_number", "status"], "properties": {
        "id": INT, "phone_number": STR, "numero": STR,
        "status": {"enum": ["pending", "verified", "expired", "dead"]}, "sms_status": NSTR, "id_sms_api": NSTR,
        "created_at": TIME, "expires_at": TIME, "verified_at": TIME, "attempts": INT, "tries_left": INT}},
}


def _op(summary: str, responses: dict[str, Any], *, security: list[dict[str, Any]] = BEARER,
        body: dict[str, Any] | None = None, form: bool = False, params: list[dict[str, Any]] | None = None,
        tags: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, "security": security}
    if tags:
        op["tags"] = list(tags)
    if body is not None:
        content = {"application/json": {"schema": body}}
        if form:
            content["application/x-www-form-urlencoded"] = {"schema": body}
        op["requestBody"] = {"required": True, "content": content}
    if params:
        op["parameters"] = params
    return op


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


SMSFLOW_ERROR = _json({"type": "object", "required": ["code", "message"],
                       "properties": {"code": INT, "message": STR}}, "refused (SMSFLOW's shape)")
TOKEN: list[dict[str, Any]] = [{"token": []}, {"bearer": []}]


def _smsflow_paths() -> dict[str, Any]:
    """SMSFLOW's paths (seed 002); each is served with and without its final slash."""
    def op(summary: str, ok: dict[str, Any], *, body: dict[str, Any] | None = None, security: Any = TOKEN,
           params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return _op(summary, {"200": _json(ok, "done"), "400": SMSFLOW_ERROR, "401": SMSFLOW_ERROR,
                             "403": SMSFLOW_ERROR, "404": SMSFLOW_ERROR, "409": SMSFLOW_ERROR,
                             "410": SMSFLOW_ERROR}, security=security, body=body, form=body is not None,
                   params=params, tags=("SMSFLOW",))
    obj: dict[str, Any] = {"type": "object"}
    paths = {
        "/auth2/get_token_auth/": {"post": op("A token valid 24 h from a username and password", obj, body={
            "type": "object", "required": ["username", "password"], "properties": {"username": STR,
                                                                                    "password": STR}},
            security=NONE)},
        "/auth2/revoke_token/": {"post": op("Revoke the token presented (all of its user's with all=true)", obj,
                                            body={"type": "object", "properties": {"all": STR}})},
        "/apiv2/sms/": {
            "post": op("Send an SMS", obj, body={"type": "object", "required": ["number", "message"], "properties": {
                "number": STR, "message": STR, "sender_id": STR, "campagn_id": STR,
                "planned_date": {"type": "string", "description": "unix time"}}}),
            "get": op("One SMS (?id=SMS…), or the last 1,000", obj, params=[_q("id", STR, "the sms_id")])},
        "/apiv2/smscode/": {
            "post": op("Send a verification code", obj, body={"type": "object", "required": ["phone_number"],
                                                             "properties": {"phone_number": STR,
                                                                            "timeout": INT}}),
            "get": op("List codes, or one with ?id=", obj, params=[_q("id", {"type": "integer", "minimum": 0},
                                                                      "the code's id")])},
        "/apiv2/verify_code/": {"post": op("Check a code", obj, body={
            "type": "object", "required": ["phone_number", "code"],
            "properties": {"phone_number": STR, "code": STR}})},
        "/apiv2/balance": {"get": op("What the account can still send today (its devices' rates until "
                                     "midnight)", obj)},
    }
    out: dict[str, Any] = {}
    for path, item in paths.items():
        out[path] = item
        out[path.rstrip("/") if path.endswith("/") else path + "/"] = copy.deepcopy(item)
    return out


def _paths() -> dict[str, Any]:
    send = _op("Send SMS (inSIM; the Ardary form too)", {
        "200": _json({"oneOf": [{"type": "array", "items": _ref("SendSmsResult")},
                                {"type": "object", "required": ["data"], "properties": {
                                    "data": {"type": "array", "items": _ref("SendSmsResult")},
                                    "count_sent": INT}}]},
                     "one result per message (Ardary form: wrapped in data)"),
        "400": ERROR, "413": ERROR}, security=NONE, body=_ref("SendSmsRequest"), tags=("inSIM",))
    ardary_send = copy.deepcopy(send)
    ardary_send["summary"] = "Send SMS, older Ardary path (answer wrapped in data)"
    contact = _op("Create or update contacts", {
        "200": _json({"type": "object", "properties": {"data": {"type": "object", "properties": {
            "contact": {"type": "array", "items": _ref("ContactResult")}}}}}, "one result per contact; a wrong "
            "login or key is an Error with #001 (#002: account disabled), also with HTTP 200"),
        "400": ERROR, "413": ERROR}, security=NONE, body=_ref("ContactRequest"), tags=("inSIM",))
    call = _op("Click-to-call: the account's phone dials a number", {
        "200": _json({"oneOf": [{"type": "array", "items": _ref("CallResult")}, _ref("Error")]},
                     "queued, or #002 (no phone connected); a wrong login or key: an Error with #001"),
        "400": ERROR}, security=NONE, body=_ref("CallRequest"), tags=("inSIM",))
    sms_id = _p("id", STR, "the numeric id (or, as extensions, the id_sms_api, or in_<n> for an inbound SMS)")
    return {
        "/api/v1/sendsms": {"post": send},
        "/api/sendSms": {"post": ardary_send},
        "/api/v1/contact": {"post": contact},
        "/api/contact": {"post": copy.deepcopy(contact)},
        "/api/sendSmsSolo": {"post": dict(copy.deepcopy(send), summary="Send SMS (the official SDKs' path)")},
        "/api/addcontactSolo": {"post": dict(copy.deepcopy(contact), summary="Contacts (the official SDKs' path)")},
        "/api/v1/clicTocall": {"post": call},
        "/api/v1/qualification": {"post": _op("Call qualification from the interface", {
            "200": _json(_envelope({"type": "object"}), "recorded; a qualification webhook follows"),
            "400": ERROR, **AUTH_ERRORS}, body=_ref("QualificationRequest"), form=True, tags=("inSIM",))},
        "/l/{code}": {"get": _op("Follow a tracked link (records the click)", {
            "302": {"description": "redirect to the tracked URL"},
            "404": {"description": "unknown code"}}, security=NONE,
            params=[_p("code", STR, "the short code")], tags=("links",))},
        "/api/v1/sms": {"post": _op("Create and send one SMS (Notimation)", {
            "200": _json(_envelope({"type": "array", "items": {"type": "object", "properties": {
                "sms_id": INT, "sms_status": STR}}}), "queued"),
            "400": ERROR, **AUTH_ERRORS, "422": ERROR}, body=_ref("NotimationCreate"), form=True, tags=("read",)),
            "get": _op("List SMS, outgoing and inbound, newest first (Notimation)", {
            "200": _json(_envelope({"type": "array", "items": _ref("Sms")}), "the messages"),
            "400": ERROR, **AUTH_ERRORS}, params=[
                _q("direction", {"type": "string", "enum": ["in", "out", "inbound", "outbound"]}, "filter"),
                _q("status", STR, "Notimation's pending, cancelled, queued, dispatched, sent, error, "
                                  "received; or a simbridge state (delivered, failed, expired, unconfirmed)"),
                _q("take", {"type": "integer", "minimum": 1, "maximum": 1000}, "how many (50)"),
                _q("skip", {"type": "integer", "minimum": 0}, "how many to skip (0)"),
                _q("cursor", STR, "start after this row: the next_cursor of the page before (any depth, "
                                  "as fast as the first page)"),
                _q("api_key", STR, "the access key, if not sent as a Bearer token")], tags=("read",))},
        "/api/v1/sms/{id}": {"get": _op("One SMS with its history (Notimation)", {
            "200": _json(_envelope(_ref("Sms")), "the message"), "404": ERROR, **AUTH_ERRORS},
            params=[sms_id], tags=("read",))},
        "/api/v1/phone_number/{country}/{number}": {"get": _op("Phone number lookup (Notimation)", {
            "200": _json(_envelope(_ref("PhoneNumber")), "what the number is"), "400": ERROR, **AUTH_ERRORS},
            params=[_p("country", STR, "two-letter country code, e.g. ar, fr"),
                    _p("number", STR, "the number, national or international"),
                    _q("lang", STR, "language of operator and city (en)")], tags=("read",))},
        "/api/v1/smscode": {
            "post": _op("Send a verification code by SMS (SMSFLOW)", {
                "200": _json(_envelope(_ref("Code")), "queued; the code itself is never returned"),
                "400": ERROR, **AUTH_ERRORS, "409": ERROR}, body=_ref("CodeRequest"), form=True,
                tags=("verification",)),
            "get": _op("List verification codes, or one with ?id=", {
                "200": _json(_envelope({"type": "array", "items": _ref("Code")}), "the codes"),
                "400": ERROR, **AUTH_ERRORS}, params=[
                    _q("id", {"type": "integer", "minimum": 0}, "one code"),
                    _q("take", {"type": "integer", "minimum": 1, "maximum": 1000}, "how many (50)"),
                    _q("skip", {"type": "integer", "minimum": 0}, "how many to skip")],
                tags=("verification",))},
        "/api/v1/smscode/{id}": {"get": _op("Status of one verification code", {
            "200": _json(_envelope(_ref("Code")), "the code's status"), "404": ERROR, **AUTH_ERRORS},
            params=[_p("id", STR, "the code's id")], tags=("verification",))},
        "/api/v1/verify_code": {"post": _op("Check a verification code (5 tries, then it is dead)", {
            "200": _json(_envelope(_ref("Code")), "the code is right (and now used)"),
            "400": ERROR, **AUTH_ERRORS, "410": ERROR, "422": ERROR}, body=_ref("VerifyRequest"), form=True,
            tags=("verification",))},
        "/api/v1/devices": {"get": _op("Devices of the account (every device for an operator): state, set-up "
                                       "step and reason, signal, battery, last seen, sends today, limits", {
            "200": _json(_envelope({"type": "array", "items": {"type": "object"}}), "devices"),
            **AUTH_ERRORS}, tags=("operations",))},
        **_manage_paths(),
        "/api/v1/simulate/{what}": {"post": _op("Make a virtual device receive an SMS or a call (extension)", {
            "200": _json(_envelope({"type": "object"}), "the event was emitted"), "400": ERROR, "404": ERROR,
            **AUTH_ERRORS}, params=[_p("what", {"type": "string", "enum": ["incoming-sms", "call"]}, "what")],
            body={"type": "object", "properties": {"from": STR, "text": STR, "missed": BOOL,
                                                   "duration": {"type": "number", "minimum": 0},
                                                   "device": STR}}, tags=("operations",))},
        "/api/v1/devices/{id}/recheck": {"post": _op("Close a device's session if its token was revoked "
                                                     "(used by simbridge pair --revoke)", {
            "200": _json(_envelope({"type": "object"}), "checked"), "404": ERROR},
            params=[_p("id", STR, "device id")], security=[{"bearer": []}], tags=("operations",))},
        "/api/v1/webhooks/dead": {"get": _op("Webhook events given up on (dead letters), oldest first", {
            "200": _json(_envelope({"type": "array", "items": {"type": "object"}}), "the dead events"),
            "400": ERROR, **AUTH_ERRORS}, params=[_q("take", {"type": "integer", "minimum": 1, "maximum": 1000},
                                                   "how many (100)")], tags=("webhooks",))},
        "/api/v1/webhooks/replay": {"post": _op("Send dead webhook events again (all, or those of ids)", {
            "200": _json(_envelope({"type": "object", "properties": {"replayed": INT}}), "how many are live again"),
            "400": ERROR, **AUTH_ERRORS}, body={"type": "object", "properties": {
                "ids": {"type": "array", "maxItems": 500, "items": {"type": "integer", "minimum": 1}}}},
            tags=("webhooks",))},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "Prometheus text format",
                                                               "content": {"text/plain": {"schema": STR}}}},
                                security=NONE, tags=("operations",))},
        "/api/v1/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                                            security=NONE, tags=("operations",))},
        "/healthz": {"get": _op("Liveness", {"200": _json({"type": "object"}, "ok"),
                                             "503": _json({"type": "object", "properties": {"store": STR}},
                                                          "the store takes no writes; `store` says why")},
                                security=NONE, tags=("operations",))},
        **_smsflow_paths(),
    }


ACCOUNT_Q = _q("account", STR, "operators only: the account to act on (default: the caller's own)")
JOB_STATES = ["queued", "dispatched", "unconfirmed", "sent", "delivered", "failed", "expired", "cancelled"]
COOKIE: list[dict[str, Any]] = [{"console_session": []}]


def _manage_paths() -> dict[str, Any]:
    """What the web console does, as API routes (bridge/api/manage.py), and the
    console's own routes (cookie session; every POST needs X-CSRF-Token)."""
    number = _p("number", STR, "the contact's number")
    items = _envelope({"type": "array", "items": {"type": "object"}})
    one = _envelope({"type": "object"})
    tag = ("managing",)
    paths: dict[str, Any] = {
        "/api/v1/threads": {"get": _op("Conversations: one per contact number, newest first", {
            "200": _json(items, "threads"), **AUTH_ERRORS, "404": ERROR}, params=[ACCOUNT_Q], tags=tag)},
        "/api/v1/threads/{number}": {
            "get": _op("One conversation, oldest first, with each outgoing message's state and device", {
                "200": _json(one, "the thread"), **AUTH_ERRORS, "404": ERROR}, params=[number, ACCOUNT_Q], tags=tag),
            "post": _op("Reply in a conversation (judged as sendsms judges a message)", {
                "200": _json(one, "queued"), "400": ERROR, **AUTH_ERRORS, "404": ERROR},
                params=[number, ACCOUNT_Q], body={"type": "object", "required": ["message"],
                                                  "properties": {"message": STR}}, tags=tag)},
        "/api/v1/jobs": {"get": _op("Jobs, newest first, by state and search (number or id)", {
            "200": _json(items, "jobs"), "400": ERROR, **AUTH_ERRORS, "404": ERROR}, params=[
                _q("state", {"type": "string", "enum": JOB_STATES}, "only jobs in this state"),
                _q("search", STR, "an id_sms_api, or a part of the phone number"),
                _q("take", {"type": "integer", "minimum": 1, "maximum": 500}, "how many (100)"), ACCOUNT_Q],
            tags=tag)},
        "/api/v1/jobs/counts": {"get": _op("Jobs by state and priority", {
            "200": _json(items, "counts"), **AUTH_ERRORS, "404": ERROR}, params=[ACCOUNT_Q], tags=tag)},
        "/api/v1/sms/{id}/cancel": {"post": _op("Cancel a queued message (state cancelled; again: no change)", {
            "200": _json(one, "cancelled, with its history"), **AUTH_ERRORS, "404": ERROR,
            "409": ERROR}, params=[_p("id", STR, "id_sms_api"), ACCOUNT_Q], tags=tag)},
        "/api/v1/webhooks/events": {"get": _op("The webhook outbox: pending, retrying (next attempt, last "
                                                "error) and dead events; delivered ones with delivered=true", {
            "200": _json(items, "events"), **AUTH_ERRORS, "404": ERROR},
            params=[_q("delivered", {"type": "boolean"}, "the delivered events instead"), ACCOUNT_Q], tags=tag)},
        "/api/v1/webhooks/events/{id}/replay": {"post": _op("Deliver a dead event again", {
            "200": _json(one, "pending again"), "400": ERROR, **AUTH_ERRORS, "404": ERROR, "409": ERROR},
            params=[_p("id", STR, "the event's id"), ACCOUNT_Q], tags=tag)},
        "/api/v1/webhooks/test": {"post": _op("Record a test event (sms_received, test: true) for the webhook", {
            "200": _json(one, "recorded"), **AUTH_ERRORS, "404": ERROR, "409": ERROR},
            params=[ACCOUNT_Q], tags=tag)},
        "/api/v1/events": {"get": _op("Server-sent events (Accept: text/event-stream): `change` whenever a "
                                      "message of the account changes; else the last change's time, once", {
            "200": {"description": "an event stream, or {changed: epoch seconds}",
                    "content": {"text/event-stream": {"schema": STR}, "application/json": {"schema": one}}},
            **AUTH_ERRORS, "404": ERROR}, params=[ACCOUNT_Q], tags=tag)},
    }
    console = ("console",)
    page = {"200": {"description": "the page", "content": {"text/html": {"schema": STR}}}}
    paths.update({
        "/console": {"get": _op("The web console (docs/console.md)", page, security=NONE, tags=console)},
        "/console/": {"get": _op("The web console", page, security=NONE, tags=console)},
        "/console/static/{name}": {"get": _op("The console's script and style sheet", {
            "200": {"description": "the file"}, "404": {"description": "no such file"}}, security=NONE,
            params=[_p("name", STR, "console.js or console.css")], tags=console)},
        "/console/session": {"get": _op("Who is signed in, and the CSRF token", {"200": _json({"type": "object"},
                                        "the session, or a sign-in token")}, security=NONE, tags=console)},
        "/console/login": {"post": _op("Sign in with login, access key and the sign-in token", {
            "200": _json({"type": "object"}, "signed in"), **AUTH_ERRORS}, security=NONE, form=True,
            body={"type": "object", "properties": {"login": STR, "key": STR, "csrf": STR}}, tags=console)},
        "/console/logout": {"post": _op("Sign out", {"200": _json({"type": "object"}, "signed out"), **AUTH_ERRORS},
                                        security=COOKIE, tags=console)},
    })
    # The console's JSON calls: each is the API route above, under the session cookie.
    for path, methods in {"threads": ("get",), "threads/{number}": ("get", "post"), "jobs": ("get",),
                          "jobs/counts": ("get",), "jobs/{id}": ("get",), "jobs/{id}/cancel": ("post",),
                          "devices": ("get",), "devices/{id}/recheck": ("post",), "webhooks": ("get",),
                          "webhooks/{id}/replay": ("post",), "webhooks/test": ("post",),
                          "events": ("get",)}.items():
        params = [_p(name, STR, name) for name in ("number", "id") if "{" + name + "}" in path] + [ACCOUNT_Q]
        paths["/console/api/" + path] = {m: _op(f"Console: {m.upper()} {path} (as the API's route; cookie "
                                                "session, X-CSRF-Token on POST)", {
            "200": _json({}, "as the API's answer, without the envelope"), "400": ERROR, **AUTH_ERRORS,
            "404": ERROR, "409": ERROR}, security=COOKIE, params=params, tags=console) for m in methods}
    return paths


@functools.lru_cache(maxsize=8)
def _document(public_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "simbridge API", "version": VERSION,
                 "description": "inSIM-compatible SMS and call API (and its older Ardary form), with "
                                "Notimation-style reads and SMSFLOW-style verification codes. "
                                "See docs/api.md."},
        "servers": [{"url": public_url}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the account's access key"},
                "api_key": {"type": "apiKey", "in": "query", "name": "api_key"},
                "console_session": {"type": "apiKey", "in": "cookie", "name": "simbridge_console"},
                "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                          "description": "SMSFLOW: 'Token <token from /auth2/get_token_auth/>'"},
            },
        },
    }


def document(public_url: str) -> dict[str, Any]:
    return _document(public_url)
