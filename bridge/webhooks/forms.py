"""The webhook forms (pure: no I/O).

One formatter per form turns an outbox event into a :class:`Request` — method,
URL, headers, body — that the transport (``http.py``) sends as it is:

- **inSIM** (``webhook_format = "insim"``, the default): ``GET
  webhook_url?{message|calls|status|clics|qualification}=<URL-encoded JSON>``
  with the fields of seed 000's examples, field for field, plus ``event_id``.
- **Ardary** (``webhook_format = "ardary"``): the older form of seeds 001/003
  and the SDKs' READMEs: ``GET webhook_url?{message|status|click|call|calls}=``
  with their fields, titles and ``Y-m-d H:i:s`` dates.
- **Notimation** (``webhook_format = "notimation"``): ``POST`` of
  ``{sms_id, event, message, data{…}}`` as seed 004 shows, its event names.
- **JSON** (``webhook_format = "json"``): ``POST`` of a JSON event, signed
  (``signing.py``).

The GET forms' JSON never holds a literal ``%`` (it is written ``\\u0025``,
which every JSON reader reads back as ``%``): the seeds' own receivers decode
the parameter a second time (Flask's ``unquote``, Express's
``decodeURIComponent``) and PHP's once, and with no ``%`` in the text both
readings give the same bytes.

:data:`FORMATTERS` maps each form name to its formatter; a new form is one
function and one entry. Every URL a formatter returns is plain ASCII:
non-ASCII in the configured ``webhook_url`` is percent-encoded (UTF-8) and a
non-ASCII host IDNA-encoded (:func:`sendable_url`). See docs/webhooks.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from yarl import URL

from bridge.config import AccountConfig
from bridge.core import notimation as nm
from bridge.core import numbers
from bridge.webhooks import outbox as ob
from bridge.webhooks.signing import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from device_agents.common import iso_utc

# inSIM GET parameter of each canonical event kind.
INSIM_PARAM = {
    ob.SMS_RECEIVED: "message",
    ob.CALL_INCOMING: "calls", ob.CALL_OUTGOING: "calls", ob.CALL_MISSED: "calls",
    ob.SMS_SENT: "status", ob.SMS_DELIVERED: "status", ob.SMS_FAILED: "status",
    ob.LINK_CLICKED: "clics",
    ob.CALL_QUALIFICATION: "qualification",
}
CALL_TITLES = {ob.CALL_INCOMING: "incoming_call", ob.CALL_OUTGOING: "outgoing_call",
               ob.CALL_MISSED: "missed_call"}
STATUS_WORDS = {ob.SMS_SENT: "sent", ob.SMS_DELIVERED: "received", ob.SMS_FAILED: "failed"}
# Fields of the store's payloads that hold epoch seconds (turned into ISO text in the JSON form).
TIME_FIELDS = ("date", "call_time", "clicked_at", "at", "created", "due")


class Unrenderable(ValueError):
    """The event cannot be carried by the account's webhook form (for good: it is not retried)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make for one event. ``url`` is ASCII, already encoded."""
    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# Small pieces


def local_time(ts: float, zone: ZoneInfo) -> str:
    """``2025-01-15 14:30:00`` in ``zone``, as inSIM writes wall-clock times."""
    return dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S")


def hms(seconds: float) -> str:
    """``00:05:23``; hours may pass 99 for absurdly long calls."""
    total = max(0, int(round(seconds)))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


_COMPONENT_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
# str.translate's table for ASCII, as a list: indexed, not hashed (about twice as fast as a dict).
_ASCII_ESCAPES = [chr(c) if c in _COMPONENT_SAFE else f"%{c:02X}" for c in range(128)]


def _reference_component(text: str) -> str:
    if text.isascii():
        return text.translate(_ASCII_ESCAPES)
    return quote(text, safe="!~*'()")


def _compiled_quoter() -> Callable[[str], str] | None:
    """yarl's percent-encoder (compiled; yarl comes with aiohttp), made to give
    exactly :func:`_reference_component`'s output, several times faster: it
    leaves RFC 3986's sub-delimiters ``$&+,;=`` as they are, so they are
    escaped after it. Used only if it is the compiled one and it passes a check
    on every ASCII character and a few others; else None."""
    try:
        from yarl._quoting import _Quoter  # not public: hence the check below
    except ImportError:
        return None
    if not getattr(_Quoter, "__module__", "").endswith("_quoting_c"):
        return None  # the pure-Python fallback is slower than str.translate
    try:
        quoter = _Quoter(safe="!~*'()", requote=False)
    except TypeError:
        return None

    def component(text: str) -> str:
        return (quoter(text).replace("$", "%24").replace("&", "%26").replace("+", "%2B").replace(",", "%2C")
                .replace(";", "%3B").replace("=", "%3D"))

    sample = "".join(map(chr, range(128))) + "%25 é ✅ 😀 \u0025 \x7f"
    try:
        ok = all(component(text) == _reference_component(text) for text in (sample, *sample, "%41", ""))
    except Exception:  # noqa: BLE001 - any surprise: not used
        return None
    return component if ok else None


_COMPILED_COMPONENT = _compiled_quoter()


def encode_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``: UTF-8, everything but ``A-Za-z0-9-_.!~*'()`` escaped.
    UnicodeEncodeError for a lone surrogate (no UTF-8 for it)."""
    if _COMPILED_COMPONENT is None:
        return _reference_component(text)
    if not text.isascii():
        text.encode()  # a lone surrogate raises here, as quote() does (yarl would drop it)
    return _COMPILED_COMPONENT(text)


@functools.lru_cache(maxsize=256)
def sendable_url(url: str) -> str:
    """``url`` as it goes on the wire: ASCII, non-ASCII path and query
    percent-encoded (UTF-8), a non-ASCII host IDNA-encoded, ``user:pass@``
    kept (the transport sends it as Basic auth). ValueError if it cannot be sent
    (config load refuses such URLs first, naming the key)."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError("not an http(s) URL with a host")
    return str(parsed)


def _time(value: Any, fallback: float) -> float:
    kind = type(value)
    if kind is float:
        return value
    return float(value) if kind is int or (isinstance(value, (int, float)) and kind is not bool) else fallback


def _at(event: dict[str, Any]) -> float:
    """When the event happened (its ``at``; now if it has none)."""
    value = event.get("at")
    return value if type(value) is float else _time(value, time.time())


def _event(row: ob.OutboxRow) -> dict[str, Any]:
    try:
        event = json.loads(row.payload)
    except ValueError as exc:
        raise Unrenderable(f"stored payload is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise Unrenderable("stored payload is not a JSON object")
    event.setdefault("event_id", f"evt_{row.id}")
    return event


def _webhook_url(account: AccountConfig) -> str:
    if not account.webhook_url:
        raise Unrenderable(f"account {account.login!r} has no webhook_url")
    return sendable_url(account.webhook_url)  # ValueError (retried: the URL may be fixed) if it cannot be sent


# ----------------------------------------------------------------------------
# inSIM form


def insim_body(kind: str, event: dict[str, Any], *, login: str, zone: ZoneInfo) -> tuple[str, dict[str, Any]]:
    """The inSIM GET parameter and JSON object for one outbox event (seed 000)."""
    at = _at(event)
    body: dict[str, Any]
    if kind == ob.SMS_RECEIVED:
        body = {"device_identification": login, "title": "incoming_sms", "from": event.get("from", ""),
                "message": event.get("message", ""), "date": iso_utc(_time(event.get("date"), at))}
    elif kind in CALL_TITLES:
        missed = kind == ob.CALL_MISSED
        body = {"device_identification": login, "title": CALL_TITLES[kind],
                "phone_number": event.get("phone_number", ""),
                "call_time": local_time(_time(event.get("call_time"), at), zone),
                "duration": "0" if missed else hms(_time(event.get("duration_s"), 0.0))}
    elif kind in STATUS_WORDS:
        body = {"user": login, "phone_number": event.get("phone_number", ""), "status": STATUS_WORDS[kind],
                "date_status": iso_utc(at), "id_sms_api": event.get("id_sms_api", "")}
        if kind == ob.SMS_FAILED:
            body["error"] = event.get("reason") or event.get("state") or "failed"  # extension
    elif kind == ob.LINK_CLICKED:
        body = {"id_sms_api": event.get("id_sms_api", ""), "clicked_link": "clicked_link",
                "phone_number": event.get("phone_number", ""),
                "link": event.get("link", event.get("url", "")),
                "date": local_time(_time(event.get("date", event.get("clicked_at")), at), zone)}
    elif kind == ob.CALL_QUALIFICATION:
        source = event.get("source", "mobile")
        title = "call_qualification_from_interface" if source in ("interface", "api", "web") \
            else "call_qualification_from_mobile"
        body = {"device_identification": login, "title": title,
                "from": event.get("from", event.get("phone_number", "")),
                "date": local_time(_time(event.get("date"), at), zone),
                "qualification": event.get("qualification", "")}
    else:
        raise Unrenderable(f"event kind {kind!r} has no inSIM webhook form (use webhook_format = \"json\")")
    if "event_id" in event:
        body["event_id"] = event["event_id"]
    return INSIM_PARAM[kind], body


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)  # made once


def get_json(body: dict[str, Any]) -> str:
    """The JSON text a GET form carries: UTF-8 text, no literal ``%`` (see the
    module's docstring: decoded once or twice, it reads the same)."""
    text = _COMPACT.encode(body)
    return text.replace("%", "\\u0025") if "%" in text else text


def insim_url(webhook_url: str, param: str, body: dict[str, Any]) -> str:
    """``webhook_url`` (already sendable) with ``param=<encodeURIComponent(JSON)>`` appended."""
    return f"{webhook_url}{'&' if '?' in webhook_url else '?'}{param}={encode_component(get_json(body))}"


# The free-text fields of the GET forms, cut first when a URL must be shortened.
TEXT_FIELDS = ("message", "body", "qualification")
CUT_MARK = "…"


def fitted_url(webhook_url: str, param: str, body: dict[str, Any], limit: int) -> str:
    """:func:`insim_url`, with the body's free text (an incoming SMS, a call note) cut so that
    the whole URL is at most ``limit`` bytes (0: never cut), marked ``"truncated": true``.
    A 23-part SMS makes a GET URL of about 9 KB, over what nginx, Apache and aiohttp take in
    a request line by default (8 KB): they answer 414 or 400, for good. Cut only when it must;
    if even no text at all would not fit, the URL goes as it is (the receiver decides)."""
    url = insim_url(webhook_url, param, body)
    texts = [f for f in TEXT_FIELDS if isinstance(body.get(f), str) and body[f]]
    if not limit or len(url) <= limit or not texts:
        return url
    whole = {f: body[f] for f in texts}

    def build(keep: int) -> str:
        cut = dict(body, truncated=True)
        for f in texts:
            cut[f] = whole[f][:keep] + CUT_MARK
        return insim_url(webhook_url, param, cut)

    low, high = 0, max(len(t) for t in whole.values())  # the longest prefix that fits, by bisection
    if len(build(0)) > limit:
        return url
    while low < high:
        mid = (low + high + 1) // 2
        if len(build(mid)) <= limit:
            low = mid
        else:
            high = mid - 1
    return build(low)


def insim_request(row: ob.OutboxRow, account: AccountConfig, zone: ZoneInfo, now: float) -> Request:
    url = _webhook_url(account)
    param, body = insim_body(row.kind, _event(row), login=account.login, zone=zone)
    return Request("GET", fitted_url(url, param, body, account.webhook_max_url))


# ----------------------------------------------------------------------------
# Ardary form (seeds 001/003, the SDKs' READMEs)

ARDARY_CALL_TITLES = {ob.CALL_INCOMING: ("INCOMING CALL", "incoming call"),
                      ob.CALL_OUTGOING: ("OUTGOING CALL", "outgoing call"),
                      ob.CALL_MISSED: ("MISSED", "missed call")}


def ardary_body(kind: str, event: dict[str, Any], *, login: str, zone: ZoneInfo) -> tuple[str, dict[str, Any]]:
    """The Ardary GET parameter and JSON object for one outbox event. Where
    seeds 001 and 003 spell a field differently, both spellings are sent."""
    at = _at(event)
    body: dict[str, Any]
    if kind == ob.SMS_RECEIVED:
        text = event.get("message", "")
        param, body = "message", {"title": "incoming sms", "from": event.get("from", ""), "message": text,
                                  "body": text, "date": local_time(_time(event.get("date"), at), zone)}
    elif kind in ARDARY_CALL_TITLES:
        upper, lower = ARDARY_CALL_TITLES[kind]
        number = event.get("phone_number", "")
        when = local_time(_time(event.get("call_time"), at), zone)
        duration = "00:00:00" if kind == ob.CALL_MISSED else hms(_time(event.get("duration_s"), 0.0))
        param, body = "call", {"TITLE": upper, "PHONE_NUMBER": number, "CALL_TIME": when, "DURATION": duration,
                               "title": lower, "phonenumber": number, "call_date": when}
    elif kind in STATUS_WORDS:
        number = event.get("phone_number", "")
        param, body = "status", {"user": login, "phone_number": number, "phonenumber": number,
                                 "status": STATUS_WORDS[kind], "date_status": iso_utc(at),
                                 "id_sms_api": event.get("id_sms_api", "")}
        if kind == ob.SMS_FAILED:
            body["error"] = event.get("reason") or event.get("state") or "failed"  # extension
    elif kind == ob.LINK_CLICKED:
        param, body = "click", {"title": "clicked link", "phonenumber": event.get("phone_number", ""),
                                "link": event.get("link", event.get("url", "")),
                                "date": local_time(_time(event.get("date", event.get("clicked_at")), at), zone),
                                "id_sms_api": event.get("id_sms_api", "")}
    elif kind == ob.CALL_QUALIFICATION:
        source = event.get("source", "mobile")
        title = "Call qualification From Interface" if source in ("interface", "api", "web") \
            else "Call qualification From Mobile"
        param, body = "calls", {"title": title, "from": event.get("from", event.get("phone_number", "")),
                                "qualification": event.get("qualification", ""),
                                "date": local_time(_time(event.get("date"), at), zone)}
    else:
        raise Unrenderable(f"event kind {kind!r} has no Ardary webhook form (use webhook_format = \"json\")")
    if "event_id" in event:
        body["event_id"] = event["event_id"]
    return param, body


def ardary_request(row: ob.OutboxRow, account: AccountConfig, zone: ZoneInfo, now: float) -> Request:
    url = _webhook_url(account)
    param, body = ardary_body(row.kind, _event(row), login=account.login, zone=zone)
    return Request("GET", fitted_url(url, param, body, account.webhook_max_url))


# ----------------------------------------------------------------------------
# Notimation form (seed 004)

NOTIMATION_KINDS = frozenset(nm.EVENTS)


def _iso_or_none(value: Any) -> str | None:
    return iso_utc(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def phone_object(number: str, region: str | None = None) -> dict[str, Any]:
    """Notimation's ``phone_number`` object; a sender that is no number (a
    short code, a name) comes back as it is, marked invalid."""
    try:
        return numbers.describe(number, region)
    except ValueError as exc:
        return {"number": number, "formatted_number": number, "international_number": None, "is_mobile": False,
                "is_invalid": True, "invalid_reason": str(exc)[:200], "operator": None, "city": None}


def notimation_body(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """``{sms_id, event, message, data}`` as seed 004's webhook example."""
    if kind not in NOTIMATION_KINDS:
        raise Unrenderable(f"event kind {kind!r} has no Notimation webhook (use webhook_format = \"json\")")
    at = _at(event)
    if kind == ob.SMS_RECEIVED:
        raw_id = event.get("inbound_id")
        if not isinstance(raw_id, int):
            raise Unrenderable("the inbound SMS event carries no inbound_id (recorded by an older version)")
        sms_id = nm.inbound_id(raw_id)
        data = {"id": sms_id, "phone_number": phone_object(str(event.get("from", ""))), "direction": "inbound",
                "content": event.get("message", ""), "status": nm.INBOUND_STATUS, "status_message": None,
                "created_at": iso_utc(_time(event.get("date"), at)), "programmed_at": None, "sent_at": None}
        name = nm.EVENTS[kind]
    else:
        raw_id = event.get("job_id")
        if not isinstance(raw_id, int):
            raise Unrenderable("the SMS event carries no job_id (recorded by an older version)")
        sms_id = nm.outbound_id(raw_id)
        state = event.get("state")
        reason = event.get("reason")
        data = {"id": sms_id, "phone_number": phone_object(str(event.get("phone_number", ""))),
                "direction": "outbound", "content": event.get("message", ""),
                "status": nm.STATUS.get(str(state), "pending"), "status_message": reason,
                "created_at": _iso_or_none(event.get("created")), "programmed_at": _iso_or_none(event.get("due")),
                "sent_at": iso_utc(at) if kind == ob.SMS_SENT else None, "id_sms_api": event.get("id_sms_api")}
        name = nm.job_event_name(kind, str(state) if state is not None else None)
    # "message": Notimation's explanatory text for the event (null in its example; the reason of an error).
    message = event.get("reason") if kind == ob.SMS_FAILED else None
    return {"sms_id": sms_id, "event": name, "message": message, "data": data,
            "event_id": event.get("event_id")}


def notimation_request(row: ob.OutboxRow, account: AccountConfig, zone: ZoneInfo, now: float) -> Request:
    url = _webhook_url(account)
    body = json.dumps(notimation_body(row.kind, _event(row)), ensure_ascii=False, separators=(",", ":")).encode()
    return Request("POST", url, body, {"Content-Type": "application/json"})


# ----------------------------------------------------------------------------
# JSON form


def json_body(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """The JSON form's event object: envelope plus the store's fields, times as ISO text."""
    at = _at(event)
    data = {k: v for k, v in event.items() if k not in ("event_id", "kind", "account", "at")}
    for key in TIME_FIELDS:
        if key in data and isinstance(data[key], (int, float)) and not isinstance(data[key], bool):
            data[key] = iso_utc(data[key])
    body: dict[str, Any] = {"event_id": event.get("event_id"), "event": kind, "account": event.get("account"),
                            "created_at": iso_utc(at)}
    if "id_sms_api" in event:
        body["id_sms_api"] = event["id_sms_api"]
    body["data"] = data
    return body


def json_request(row: ob.OutboxRow, account: AccountConfig, zone: ZoneInfo, now: float) -> Request:
    url = _webhook_url(account)
    event = _event(row)
    body = json.dumps(json_body(row.kind, event), ensure_ascii=False, separators=(",", ":")).encode()
    timestamp = str(int(now))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
               EVENT_HEADER: row.kind, EVENT_ID_HEADER: str(event["event_id"])}
    if account.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(account.webhook_secret, timestamp, body)
    return Request("POST", url, body, headers)


# ----------------------------------------------------------------------------
# Choosing the form

Formatter = Callable[[ob.OutboxRow, AccountConfig, ZoneInfo, float], Request]
FORMATTERS: dict[str, Formatter] = {"insim": insim_request, "ardary": ardary_request,
                                    "notimation": notimation_request, "json": json_request}


def build_request(row: ob.OutboxRow, account: AccountConfig, zone: ZoneInfo, *, now: float | None = None) -> Request:
    """The request that delivers ``row`` to ``account``'s webhook; Unrenderable if none can."""
    formatter = FORMATTERS.get(account.webhook_format)
    if formatter is None:
        raise Unrenderable(f"unknown webhook_format {account.webhook_format!r}")
    return formatter(row, account, zone, now if now is not None else time.time())
