"""The HTTP API: inSIM's (seed 000), its older Ardary form (seeds 001/003),
and the useful extras of the others (Notimation's read side, SMSFLOW's
verification codes). docs/api.md describes every endpoint; the OpenAPI
document (bridge/openapi.py) is served at ``/api/v1/openapi.json``.

inSIM endpoints authenticate with the body's ``header`` (``login`` and
``accessKey``; the Ardary form sends the header as a one-element list and
spells it ``accesskey``). The other endpoints take ``Authorization: Bearer
<access key>`` (or ``Token <key>``, or an ``api_key`` parameter) and answer
in Notimation's envelope: ``{"status": "success", "data": …}`` or
``{"status": "error", "message": …}``.

``POST /api/v1/sendsms`` judges each message on its own: the valid ones of a
batch are accepted even when others carry an error code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hmac
import json
import logging
import math
import re
import secrets
import string
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import phonenumbers
from aiohttp import web

from bridge.api import verification
from bridge.api.openapi import document as openapi_document
from bridge.api.workers import SplitPool
from bridge.config import AccountConfig, Config
from bridge.core import jobstates as js
from bridge.core import numbers
from bridge.store.model import Contact, Enqueued, Job, NewJob, VerificationCode, new_id_sms_api
from bridge.store.protocols import Store
from device_agents import protocol
from device_agents.modem.gsm7 import segment_count

log = logging.getLogger(__name__)

# inSIM / Ardary error codes of sendsms (seed 003).
E_AUTH = "#001"
E_DISABLED = "#002"
E_OPTED_OUT = "#003"
E_FORBIDDEN = "#004"
E_EMPTY = "#006"
E_NUMBER = "#007"
E_UNKNOWN = "#009"
ERROR_TEXT = {
    E_AUTH: "Authentification failed",
    E_DISABLED: "Your account is not activated yet!",
    E_OPTED_OUT: "This phone number asked for stop",
    E_FORBIDDEN: "Your sms text contains forbidden words",
    E_EMPTY: "Your sms has an empty content",
    E_NUMBER: "The phone number is invalid",
    E_UNKNOWN: "Unknown error",
}
# Contact error codes (seeds 000, 001, 003): another table.
C_INVALID = "#001"
C_EMPTY = "#002"
C_MISSING = "#003"
C_EMAIL = "#004"
CONTACT_ERROR_TEXT = {C_INVALID: "Invalid phone number", C_EMPTY: "Empty phone number",
                      C_MISSING: "phone_number variable not found", C_EMAIL: "Invalid email"}
# Click-to-call error codes (seed 000).
CALL_UNAVAILABLE = "#001"
CALL_NOT_CONNECTED = "#002"
CALL_INFO = "please make sure the phone is connected and inSIM is running"
CALL_TTL_S = 120.0  # a call not placed within two minutes is no longer wanted

LINK_PLACEHOLDERS = ("[Lien_Tracking]", "[Lien]", "[Link]")
LINK_CODE_CHARS = 10
LINK_ALPHABET = string.ascii_letters + string.digits
LINK_CODE_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
MAX_MESSAGE_CHARS = 5000
MAX_FIELD_CHARS = 256
MAX_NOTE_CHARS = 10_000
MAX_TAKE = 1000
DEFAULT_TAKE = 50
MAX_SKIP = 10_000_000
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DIRECTIONS = {"in": "in", "inbound": "in", "incoming": "in", "out": "out", "outbound": "out", "outgoing": "out"}
STATUS_FILTERS = {**{s: s for s in js.STATES}, "received": "received", "error": js.FAILED}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra


@functools.lru_cache(maxsize=4096)  # a batch's messages share their time: format it once
def iso_utc(ts: float | None) -> str | None:
    """``2025-10-29T10:00:00.000Z``, as inSIM writes times."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(ts * 1000) % 1000:03d}Z"



def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def forbidden_matcher(words: tuple[str, ...]) -> Callable[[str], str | None]:
    """A function that returns the first forbidden word (whole word, any case,
    accents ignored) found in a text, or None."""
    if not words:
        return lambda text: None
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(_plain(w)) for w in words) + r")(?!\w)")

    def find(text: str) -> str | None:
        found = pattern.search(_plain(text))
        return found.group(1) if found else None
    return find


@functools.lru_cache(maxsize=4096)
def _describe_cached(number: str, region: str | None) -> dict[str, Any] | None:
    try:
        return numbers.describe(number, region)
    except ValueError:
        return None


def _scalar(value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    """A free-text field as a string: numbers are written out, anything else is empty."""
    if isinstance(value, str):
        return value.strip()[:limit]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One message of a sendsms request, judged."""
    index: int
    new: NewJob | None
    errors: tuple[str, ...]
    detail: str | None
    phone_number: str
    message: str
    id_sms_api: str | None  # the client's, if it gave one


class Api:
    def __init__(self, *, config: Config, store: Store, on_enqueued: Callable[[], None],
                 extra_routes: Callable[[web.Application], None] | None = None) -> None:
        self.store = store
        self.on_enqueued = on_enqueued
        self.extra_routes = extra_routes
        self.workers = SplitPool()  # the Daemon starts it: bulk batches are judged on two cores
        self.simulate: Callable[[AccountConfig, str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        self.devices_view: Callable[[AccountConfig | None], list[dict[str, Any]]] | None = None
        # Whether a device of the account that can place calls is connected
        # (the daemon wires it to its dispatcher); None: never.
        self.phones_online: Callable[[str], bool] | None = None
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.config = config
        self._forbidden = forbidden_matcher(config.api.forbidden_words)

    @property
    def region(self) -> str | None:
        return self.config.api.default_region

    # -- application ------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.api.max_body_bytes,
                              middlewares=[self._errors])
        r = app.router
        for path in ("/api/v1/sendsms", "/api/v1/sendSms", "/api/sendSms", "/api/sendsms"):
            r.add_post(path, self.sendsms)
        for path in ("/api/v1/contact", "/api/contact"):
            r.add_post(path, self.contact)
        for path in ("/api/v1/clicTocall", "/api/clicTocall"):
            r.add_post(path, self.click_to_call)
        r.add_post("/api/v1/qualification", self.qualification)
        r.add_get("/api/v1/sms", self.list_sms)
        r.add_get("/api/v1/sms/{id}", self.get_sms)
        r.add_get("/api/v1/phone_number/{country}/{number}", self.phone_number)
        r.add_post("/api/v1/smscode", self.send_code)
        r.add_get("/api/v1/smscode", self.list_codes)
        r.add_get("/api/v1/smscode/{id}", self.get_code)
        r.add_post("/api/v1/verify_code", self.verify_code)
        r.add_get("/l/{code}", self.follow_link, allow_head=False)
        r.add_get("/api/v1/openapi.json", self.openapi)
        r.add_post("/api/v1/simulate/{what}", self.simulate_endpoint)
        r.add_get("/api/v1/devices", self.devices_endpoint)
        r.add_get("/healthz", self.healthz)
        if self.extra_routes is not None:
            self.extra_routes(app)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            body: dict[str, Any] = {"status": "error", "message": exc.message}
            if exc.code:
                body["error"] = [exc.code]
            body.update(exc.extra)
            return web.json_response(body, status=exc.status)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"status": "error", "message":
                                      f"request body over {self.config.api.max_body_bytes} bytes"}, status=413)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.config.api.public_url))

    # -- auth ---------------------------------------------------------------------

    def check_login(self, login: Any, key: Any) -> AccountConfig | None:
        if not isinstance(login, str) or not isinstance(key, str):
            return None
        account = self.config.account(login)
        if account is None:
            hmac.compare_digest(key.encode(errors="replace"), b"-" * 16)  # same work either way
            return None
        if not hmac.compare_digest(account.access_key.encode(), key.encode(errors="replace")):
            return None
        return account

    def bearer_account(self, request: web.Request, params: dict[str, Any] | None = None) -> AccountConfig:
        """Account of ``Authorization: Bearer KEY`` (or ``Token KEY``, or an
        ``api_key`` query or body parameter)."""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.strip().partition(" ")
        key: Any = value.strip() if scheme.lower() in ("bearer", "token") else None
        if not key:
            key = request.query.get("api_key") or (params or {}).get("api_key")
        if not key or not isinstance(key, str):
            raise ApiError(401, "missing access key: send 'Authorization: Bearer <access key>'", E_AUTH)
        encoded = key.encode(errors="replace")
        for account in self.config.accounts:
            if hmac.compare_digest(account.access_key.encode(), encoded):
                return account
        raise ApiError(401, "unknown access key", E_AUTH)

    @staticmethod
    def _enabled(account: AccountConfig) -> AccountConfig:
        if not account.enabled:
            raise ApiError(403, ERROR_TEXT[E_DISABLED], E_DISABLED)
        return account

    @staticmethod
    def _header(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The inSIM ``header`` object, and whether it came in the Ardary form (a list)."""
        header = body.get("header")
        if isinstance(header, list):
            return (header[0] if header and isinstance(header[0], dict) else {}), True
        if not isinstance(header, dict):
            raise ApiError(400, "'header' must be an object with 'login' and 'accessKey'", E_AUTH)
        return header, False

    def header_account(self, header: dict[str, Any]) -> AccountConfig | None:
        key = next((header[k] for k in ("accessKey", "accesskey", "access_key", "password") if k in header), None)
        return self.check_login(header.get("login"), key)

    def _header_auth(self, body: dict[str, Any]) -> tuple[AccountConfig, dict[str, Any], bool]:
        header, ardary = self._header(body)
        account = self.header_account(header)
        if account is None:
            raise ApiError(401, ERROR_TEXT[E_AUTH], E_AUTH)
        return self._enabled(account), header, ardary

    # -- bodies ---------------------------------------------------------------------

    async def _json_body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}"[:300]) from None
        try:
            # Lone surrogates (\ud800) are valid JSON but not text: refuse them here.
            json.dumps(body, ensure_ascii=False).encode()
        except (UnicodeEncodeError, RecursionError, ValueError):
            raise ApiError(400, "body contains text that is not valid Unicode") from None
        return body

    async def _object_body(self, request: web.Request) -> dict[str, Any]:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        return body

    async def _params(self, request: web.Request) -> dict[str, Any]:
        """A JSON object, or form fields (SMSFLOW's clients post forms)."""
        if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except ValueError as exc:
                raise ApiError(400, f"form body cannot be read: {exc}"[:300]) from None
            params = {k: v for k, v in form.items() if isinstance(v, str)}
            for value in params.values():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise ApiError(400, "form contains text that is not valid Unicode") from None
            return params
        if not await request.read():
            return {}
        return await self._object_body(request)

    # -- sendsms ------------------------------------------------------------------

    def _prepare(self, index: int, item: Any, header: dict[str, Any], default_priority: Any,
                 checked: tuple[str | None, str | None] | None = None) -> Prepared:
        """Judge one message. ``checked``: its number already normalised (see
        :func:`normalise_batch`), as (E.164, None) or (None, why not)."""
        if not isinstance(item, dict):
            return Prepared(index, None, (E_UNKNOWN,), f"messages[{index}] must be an object", "", "", None)
        number_raw = item.get("phone_number", item.get("phonenumber"))
        text = item.get("message")
        shown_number = str(number_raw)[:64] if isinstance(number_raw, (str, int)) else ""
        shown_text = text[:MAX_MESSAGE_CHARS] if isinstance(text, str) else ""
        errors: list[str] = []
        details: list[str] = []
        id_sms_api = item.get("id_sms_api")
        if id_sms_api is not None and (not isinstance(id_sms_api, (str, int)) or isinstance(id_sms_api, bool)
                                       or not 0 < len(str(id_sms_api)) <= 64):
            errors.append(E_UNKNOWN)
            details.append("id_sms_api must be a string of 1 to 64 characters")
            id_sms_api = None
        id_sms_api = str(id_sms_api) if id_sms_api is not None else None
        if not isinstance(text, str) or not text.strip():
            errors.append(E_EMPTY)
            details.append("message is empty")
        elif len(text) > MAX_MESSAGE_CHARS:
            errors.append(E_UNKNOWN)
            details.append(f"message is longer than {MAX_MESSAGE_CHARS} characters")
        else:
            word = self._forbidden(text)
            if word is not None:
                errors.append(E_FORBIDDEN)
                details.append(f"message contains the forbidden word {word!r}")
        if checked is None:
            [checked] = normalise_batch([number_raw], 0, self.region)
        number, why_not = checked
        if number is None:
            errors.append(E_NUMBER)
            details.append(why_not)
            number = shown_number
        priority = item.get("priorite", item.get("priority", default_priority))
        if isinstance(priority, str) and priority.strip().isdigit():
            priority = int(priority)
        if isinstance(priority, bool) or priority not in (0, 1, 2):
            errors.append(E_UNKNOWN)
            details.append(f"priorite must be 0, 1 or 2, not {priority!r}"[:120])
            priority = 1
        due = None
        when = item.get("date_to_send", header.get("date_to_send"))
        if when not in (None, ""):
            try:
                due = self._parse_date(when)
            except ValueError as exc:
                errors.append(E_UNKNOWN)
                details.append(str(exc)[:200])
        url = item.get("url")
        if url in (None, ""):
            url = None
        elif not isinstance(url, str) or len(url) > 2048 or urlsplit(url).scheme not in ("http", "https") \
                or not urlsplit(url).netloc:
            errors.append(E_UNKNOWN)
            details.append("url must be an http:// or https:// URL of at most 2048 characters")
            url = None
        if errors:
            return Prepared(index, None, tuple(dict.fromkeys(errors)), "; ".join(details), number, shown_text,
                            id_sms_api)
        code = None
        if url and any(p in text for p in LINK_PLACEHOLDERS):
            code = "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_CODE_CHARS))
            short = f"{self.config.api.public_url}/l/{code}"
            for placeholder in LINK_PLACEHOLDERS:
                text = text.replace(placeholder, short)
        seg = segment_count(text)
        new = NewJob(kind="sms", phone_number=number, message=text, id_sms_api=id_sms_api,
                     url=url, priority=priority, due=due, ttl_s=self.config.dispatcher.ttl_s,
                     parts=seg.parts, encoding=seg.encoding, link_code=code)
        return Prepared(index, new, (), None, number, text, id_sms_api)

    def _parse_date(self, value: Any) -> float:
        if not isinstance(value, str):
            raise ValueError("date_to_send must be a string \"YYYY-MM-DD HH:mm:ss\"")
        try:
            when = dt.datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            try:
                when = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"date_to_send {value!r} is not \"YYYY-MM-DD HH:mm:ss\"") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(self.config.api.timezone))
        try:
            return when.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError(f"date_to_send {value!r} is out of range") from None

    async def sendsms(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object with 'header' and 'messages'")
        header, ardary = self._header(body)
        ardary = ardary or request.path in ("/api/sendSms", "/api/sendsms")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ApiError(400, "'messages' must be a list of messages")
        if len(messages) > self.config.api.max_messages:
            raise ApiError(413, f"{len(messages)} messages in one request; at most "
                                f"{self.config.api.max_messages}")
        mode = header.get("mode", "prod")
        if mode not in ("prod", "test"):
            raise ApiError(400, f"header.mode must be \"prod\" or \"test\", not {mode!r}"[:200])
        account = self.header_account(header)
        raw_numbers = [m.get("phone_number", m.get("phonenumber")) if isinstance(m, dict) else None
                       for m in messages]
        if account is None or not account.enabled:
            # Refused before any real work: a stranger's batch costs us no number checks.
            code = E_AUTH if account is None else E_DISABLED
            failed = (None, ERROR_TEXT[code])
            prepared = [self._prepare(i, m, header, header.get("priority", 1), failed)
                        for i, m in enumerate(messages)]
            results = [self._answer(None, p, errors=(code,), detail=ERROR_TEXT[code]) for p in prepared]
            return self._respond(results, ardary, status=401 if account is None else 403)
        # Phone numbers are most of the CPU: half of them are checked in the worker
        # process (only they travel: whole judged messages cost more to send back).
        checked = await self.workers.split(normalise_batch, raw_numbers, self.region)
        prepared = [self._prepare(i, m, header, header.get("priority", 1), c)
                    for i, (m, c) in enumerate(zip(messages, checked))]
        stopped = await self.store.opted_out(account.login, [p.new.phone_number for p in prepared if p.new])
        if stopped:
            prepared = [replace(p, new=None, errors=(E_OPTED_OUT,), detail=ERROR_TEXT[E_OPTED_OUT])
                        if p.new is not None and p.new.phone_number in stopped else p for p in prepared]
        good = [p for p in prepared if p.new is not None]
        if mode == "test":
            results = [self._test_answer(account.login, p) for p in prepared]
            return self._respond(results, ardary)
        enqueued: list[Enqueued] = await self.store.enqueue(account.login, [p.new for p in good]) if good else []
        by_index = {p.index: e for p, e in zip(good, enqueued)}
        if any(e.created for e in enqueued):
            self.on_enqueued()
        results = [self._answer(account.login, p, enqueued=by_index.get(p.index)) for p in prepared]
        log.info("account %s: %d message(s) accepted, %d refused", account.login, len(good),
                 len(prepared) - len(good))
        return self._respond(results, ardary)

    def _answer(self, login: str | None, p: Prepared, *, enqueued: Enqueued | None = None,
                errors: tuple[str, ...] = (), detail: str | None = None) -> dict[str, Any]:
        errors = errors or p.errors
        if enqueued is not None and not errors:
            job: Job = enqueued.job
            return {"id_sms_api": job.id_sms_api, "sms_per_message": job.parts, "user": login,
                    "sent_time": iso_utc(job.due), "phone_number": job.phone_number,
                    "message": job.message, "sent": 1}
        return {"id_sms_api": p.id_sms_api, "sms_per_message": 0, "user": login, "sent_time": None,
                "phone_number": p.phone_number, "message": p.message, "sent": 0,
                "error": list(errors), "error_message": detail or p.detail or ERROR_TEXT[errors[0]]}

    def _test_answer(self, login: str, p: Prepared) -> dict[str, Any]:
        if p.new is None:
            return self._answer(login, p)
        new = p.new
        return {"id_sms_api": new.id_sms_api or new_id_sms_api(), "sms_per_message": new.parts, "user": login,
                "sent_time": iso_utc(new.due if new.due is not None else time.time()),
                "phone_number": new.phone_number, "message": new.message, "sent": 1, "mode": "test"}

    def _respond(self, results: list[dict[str, Any]], ardary: bool, status: int = 200) -> web.Response:
        if ardary:
            for r in results:
                r["phonenumber"] = r["phone_number"]
            body: Any = {"data": results}
            failed = sum(1 for r in results if not r["sent"])
            if failed:
                body["count_sent"] = len(results) - failed
            return web.json_response(body, status=status)
        return web.json_response(results, status=status)

    # -- tracked links ------------------------------------------------------------

    async def follow_link(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        link = await self.store.click(code, user_agent=request.headers.get("User-Agent"),
                                      ip=request.remote) if LINK_CODE_RE.match(code) else None
        if link is None:
            return web.Response(status=404, text="no such link\n", content_type="text/plain")
        return web.Response(status=302, headers={"Location": link.url, "Cache-Control": "no-store"})

    # -- contacts -----------------------------------------------------------------

    async def contact(self, request: web.Request) -> web.Response:
        body = await self._object_body(request)
        account, _, _ = self._header_auth(body)
        contacts = body.get("contacts")
        if isinstance(contacts, dict):
            contacts = [contacts]
        if not isinstance(contacts, list):
            raise ApiError(400, "'contacts' must be a list of contacts")
        if len(contacts) > self.config.api.max_messages:
            raise ApiError(413, f"{len(contacts)} contacts in one request; at most {self.config.api.max_messages}")
        answers: list[dict[str, Any]] = []
        valid: list[tuple[int, Contact]] = []
        for item in contacts:
            answer, contact = self._judge_contact(item)
            if contact is not None:
                valid.append((len(answers), contact))
            answers.append(answer)
        if valid:
            # The last of two entries with the same number wins, in one transaction.
            created = await self.store.upsert_contacts(account.login, [c for _, c in valid])
            for (i, _), new in zip(valid, created):
                answers[i]["created"] = new
        log.info("account %s: %d contact(s) saved, %d refused", account.login, len(valid),
                 len(answers) - len(valid))
        return web.json_response({"data": {"contact": answers}})

    def _judge_contact(self, item: Any) -> tuple[dict[str, Any], Contact | None]:
        if not isinstance(item, dict):
            return {"result": "failed", "errors": [C_MISSING],
                    "error_message": "a contact must be an object"}, None
        first = _scalar(item.get("firstname", item.get("first_name")))
        last = _scalar(item.get("lastname", item.get("last_name")))
        email = _scalar(item.get("email"))
        address = _scalar(item.get("adress", item.get("address")))
        country = _scalar(item.get("countryCode", item.get("country_code")), 8)
        answer: dict[str, Any] = {"firstname": first, "lastname": last, "phonenumber": "", "email": email,
                                  "adress": address}
        # The spellings the request used come back too (seed 001 answers in its own).
        for alias, value in (("first_name", first), ("last_name", last)):
            if alias in item:
                answer[alias] = value
        key = next((k for k in ("phonenumber", "phone_number", "phone", "number") if k in item), None)
        errors: list[str] = []
        contact = None
        if key is None:
            errors.append(C_MISSING)
        else:
            raw = item[key]
            shown = _scalar(raw, 64)
            answer["phonenumber"] = shown
            if key != "phonenumber":
                answer[key] = shown
            if raw is None or not shown:
                errors.append(C_EMPTY)
            else:
                try:
                    number = numbers.normalise(raw, self._contact_region(country) or self.region)
                except ValueError:
                    errors.append(C_INVALID)
                else:
                    answer["phonenumber"] = number
                    if key != "phonenumber":
                        answer[key] = number
                    contact = Contact(phone_number=number, firstname=first, lastname=last, email=email,
                                      address=address, country_code=country)
        if email and not EMAIL_RE.match(email):
            errors.append(C_EMAIL)  # a warning: the contact is still saved
        answer["result"] = "success" if contact is not None else "failed"
        if errors:
            answer["errors"] = errors
            answer["error_message"] = "; ".join(CONTACT_ERROR_TEXT[e] for e in errors)
        return answer, contact

    @staticmethod
    def _contact_region(country: str) -> str | None:
        """``FR``, ``33`` or ``+33`` → ``FR``; anything else → None."""
        if country.upper() in phonenumbers.SUPPORTED_REGIONS:
            return country.upper()
        digits = country.lstrip("+").lstrip("0")
        if digits.isdigit() and len(digits) <= 3:
            region = phonenumbers.region_code_for_country_code(int(digits))
            return region if region in phonenumbers.SUPPORTED_REGIONS else None
        return None

    # -- click-to-call --------------------------------------------------------------

    async def click_to_call(self, request: web.Request) -> web.Response:
        body = await self._object_body(request)
        account, header, _ = self._header_auth(body)
        raw = header.get("phone_number", header.get("phonenumber", body.get("phone_number")))
        try:
            number = numbers.normalise(raw, self.region)
        except ValueError as exc:
            return web.json_response([{"info": str(exc)[:200], "result": "failed", "errors": [E_NUMBER]}],
                                     status=400)
        if self.phones_online is None or not self.phones_online(account.login):
            return web.json_response([{"info": CALL_INFO, "result": "failed", "errors": [CALL_NOT_CONNECTED],
                                       "error_message": "no phone of this account that can place calls "
                                                        "is connected"}])
        [enqueued] = await self.store.enqueue(account.login, [NewJob(kind="call", phone_number=number,
                                                                     priority=2, ttl_s=CALL_TTL_S)])
        self.on_enqueued()
        log.info("account %s: call to %s queued (%s)", account.login, numbers.mask(number),
                 enqueued.job.id_sms_api)
        return web.json_response([{"info": CALL_INFO, "result": "success", "errors": [],
                                   "id_sms_api": enqueued.job.id_sms_api}])

    # -- call notes -------------------------------------------------------------------

    async def qualification(self, request: web.Request) -> web.Response:
        body = await self._params(request)
        if isinstance(body.get("header"), (dict, list)):
            account, header, _ = self._header_auth(body)
        else:
            account, header = self._enabled(self.bearer_account(request, body)), {}
        raw = body.get("phone_number", body.get("from", header.get("phone_number")))
        text = body.get("qualification", body.get("note"))
        try:
            number = numbers.normalise(raw, self.region)
        except ValueError as exc:
            raise ApiError(400, str(exc)[:200], E_NUMBER) from None
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "'qualification' must be a non-empty string")
        if len(text) > MAX_NOTE_CHARS:
            raise ApiError(400, f"'qualification' is longer than {MAX_NOTE_CHARS} characters")
        note_id = await self.store.add_call_note(account.login, number, text.strip(), source="interface")
        return web.json_response({"status": "success", "data": {
            "id": note_id, "phone_number": number, "qualification": text.strip(), "source": "interface",
            "title": "call_qualification_from_interface"}})

    # -- reading -------------------------------------------------------------------

    @staticmethod
    def _int_param(params: Any, name: str, default: int, low: int, high: int) -> int:
        raw = params.get(name)
        if raw is None or raw == "":
            return default
        text = str(raw).strip()
        if not text.isdigit() or len(text) > 12 or not low <= int(text) <= high:
            raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}")
        return int(text)

    async def list_sms(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        q = request.query
        direction = q.get("direction") or None
        if direction is not None:
            if direction.lower() not in DIRECTIONS:
                raise ApiError(400, "'direction' must be \"in\" (inbound) or \"out\" (outbound)")
            direction = DIRECTIONS[direction.lower()]
        status = q.get("status") or None
        if status is not None:
            if status.lower() not in STATUS_FILTERS:
                raise ApiError(400, "'status' must be one of " + ", ".join(sorted(STATUS_FILTERS)))
            status = STATUS_FILTERS[status.lower()]
        take = self._int_param(q, "take", DEFAULT_TAKE, 1, MAX_TAKE)
        skip = self._int_param(q, "skip", 0, 0, MAX_SKIP)
        rows = await self.store.messages(account.login, direction=direction, status=status, take=take, skip=skip)
        return web.json_response({"status": "success", "data": [self.message_view(r) for r in rows]})

    def message_view(self, row: dict[str, Any]) -> dict[str, Any]:
        outbound = row["direction"] == "out"
        view: dict[str, Any] = {
            "id": row["id"], "id_sms_api": row["id_sms_api"],
            "direction": "outbound" if outbound else "inbound",
            "type": "sms", "phone_number": row["phone_number"],
            "phone_number_info": _describe_cached(row["phone_number"], self.region),
            "content": row["text"], "message": row["text"],
            "status": row["status"], "status_message": row["reason"],
            "created_at": iso_utc(row["created"]), "programmed_at": iso_utc(row["due"]),
            "sent_at": iso_utc(row["sent_at"]), "updated_at": iso_utc(row["updated"]),
            "device_id": row["device_id"],
        }
        if outbound:
            view.update({"reason": row["reason"], "priority": row["priority"],
                         "date_to_send": iso_utc(row["due"]), "sms_per_message": row["parts"],
                         "encoding": row["encoding"], "attempts": row["attempts"]})
        else:
            view.update({"received_at": iso_utc(row.get("received_at")),
                         "incomplete": bool(row.get("incomplete"))})
        return view

    async def get_sms(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        wanted = request.match_info["id"]
        job = await self.store.get_job(account.login, wanted)
        if job is None:
            found = re.fullmatch(r"in_(\d{1,18})", wanted)
            row = await self.store.get_inbound(account.login, int(found.group(1))) if found else None
            if row is None:
                raise ApiError(404, f"no SMS with id {wanted[:80]!r} for this account")
            return web.json_response({"status": "success", "data": self.message_view(row)})
        history = await self.store.history(job.id)
        view = self.job_view(job, history)
        if job.kind == "sms":
            view["phone_number_info"] = _describe_cached(job.phone_number, self.region)
            links = await self.store.links(account.login, job.id_sms_api)
            if links:
                view["links"] = [{"url": link.url, "short_url": f"{self.config.api.public_url}/l/{link.code}",
                                  "clicks": link.clicks} for link in links]
        return web.json_response({"status": "success", "data": view})

    @staticmethod
    def job_view(job: Job, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        sent_at = next((h["at"] for h in history or () if h["state"] == js.SENT), None)
        view: dict[str, Any] = {
            "id": job.id_sms_api, "id_sms_api": job.id_sms_api, "direction": "outbound", "type": job.kind,
            "phone_number": job.phone_number, "content": job.message, "message": job.message,
            "status": job.state, "status_message": job.reason, "reason": job.reason, "priority": job.priority,
            "created_at": iso_utc(job.created), "programmed_at": iso_utc(job.due), "sent_at": iso_utc(sent_at),
            "date_to_send": iso_utc(job.due), "updated_at": iso_utc(job.updated),
            "sms_per_message": job.parts, "encoding": job.encoding, "device_id": job.device_id,
            "attempts": job.attempts, "url": job.url}
        if history is not None:
            view["history"] = [{"status": h["state"], "at": iso_utc(h["at"]), "device_id": h["device_id"],
                                "reason": h["reason"]} for h in history]
        return view

    async def phone_number(self, request: web.Request) -> web.Response:
        self.bearer_account(request)
        country = request.match_info["country"].upper()
        if country not in phonenumbers.SUPPORTED_REGIONS:
            raise ApiError(400, f"unknown country code {request.match_info['country'][:8]!r} "
                                "(use a two-letter code such as \"fr\" or \"ar\")")
        lang = request.query.get("lang", "en")
        if not re.fullmatch(r"[a-zA-Z]{2}", lang):
            raise ApiError(400, "'lang' must be a two-letter language code")
        raw = request.match_info["number"]
        try:
            data = numbers.describe(raw, country, lang=lang.lower())
        except ValueError as exc:
            data = {"number": raw[:64], "formatted_number": None, "international_number": None,
                    "is_mobile": False, "is_invalid": True, "invalid_reason": str(exc)[:200],
                    "operator": None, "city": None, "country": country, "type": "unknown"}
        return web.json_response({"status": "success", "data": data})

    # -- verification codes -----------------------------------------------------------

    def code_view(self, code: VerificationCode) -> dict[str, Any]:
        status = code.status(time.time())
        return {"id": code.id, "phone_number": code.phone_number, "numero": code.phone_number,
                "status": status, "sms_status": code.sms_status, "id_sms_api": code.id_sms_api,
                "created_at": iso_utc(code.created), "expires_at": iso_utc(code.expires),
                "verified_at": iso_utc(code.verified_at), "attempts": code.attempts,
                "tries_left": 0 if status in ("verified", "dead", "expired")
                else max(0, code.max_attempts - code.attempts)}

    async def send_code(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        account = self._enabled(self.bearer_account(request, params))
        try:
            number = numbers.normalise(params.get("phone_number"), self.region)
        except ValueError as exc:
            raise ApiError(400, str(exc)[:200], E_NUMBER) from None
        ttl = self._int_param(params, "timeout", verification.DEFAULT_TTL_S, verification.MIN_TTL_S,
                              verification.MAX_TTL_S)
        length = self._int_param(params, "length", verification.DEFAULT_LENGTH, verification.MIN_LENGTH,
                                 verification.MAX_LENGTH)
        template = params.get("message") or verification.DEFAULT_TEMPLATE
        if not isinstance(template, str) or "{code}" not in template \
                or len(template) > verification.MAX_TEMPLATE_CHARS:
            raise ApiError(400, "'message' must be a text of at most "
                                f"{verification.MAX_TEMPLATE_CHARS} characters containing {{code}}")
        if await self.store.opted_out(account.login, [number]):
            raise ApiError(409, ERROR_TEXT[E_OPTED_OUT], E_OPTED_OUT)
        code = verification.new_code(length)
        salt = verification.new_salt()
        digest = await asyncio.to_thread(verification.digest, code, salt)
        text = verification.render(template, code)
        seg = segment_count(text)
        job = NewJob(kind="sms", phone_number=number, message=text, priority=2,
                     ttl_s=min(float(ttl), self.config.dispatcher.ttl_s), parts=seg.parts, encoding=seg.encoding)
        record, _ = await self.store.create_code(account.login, number, salt=salt, digest=digest, ttl_s=ttl,
                                                 max_attempts=verification.MAX_TRIES, job=job)
        self.on_enqueued()
        log.info("account %s: verification code %d sent to %s", account.login, record.id, numbers.mask(number))
        return web.json_response({"status": "success", "data": self.code_view(record)})

    async def verify_code(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        account = self.bearer_account(request, params)
        try:
            number = numbers.normalise(params.get("phone_number"), self.region)
        except ValueError as exc:
            raise ApiError(400, str(exc)[:200], E_NUMBER) from None
        candidate = params.get("code")
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            candidate = str(candidate)
        if not isinstance(candidate, str) or not candidate.strip():
            raise ApiError(400, "'code' is required")
        candidate = candidate.strip()[:32]
        code_id = self._int_param(params, "id", 0, 0, 2 ** 62) or None
        live = await self.store.live_code(account.login, number, code_id)
        spent = await self.store.use_code_try(live.id) if live is not None else None
        if spent is None:
            raise ApiError(410, "no live code for this number: none was sent, or it expired, was used, "
                                "or ran out of tries")
        ok = candidate.isdigit() and await asyncio.to_thread(verification.matches, candidate, spent.salt,
                                                             spent.digest)
        if ok and await self.store.finish_code(spent.id, verified=True):
            [record] = await self.store.codes(account.login, code_id=spent.id)
            return web.json_response({"status": "success", "message": "code verified",
                                      "data": self.code_view(record)})
        await self.store.finish_code(spent.id, verified=False)
        left = max(0, spent.max_attempts - spent.attempts)
        raise ApiError(422, f"wrong code ({left} {'try' if left == 1 else 'tries'} left)" if left
                       else "wrong code; no try left: the code is dead", id=spent.id, tries_left=left)

    async def list_codes(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        code_id = self._int_param(request.query, "id", 0, 0, 2 ** 62) or None
        take = self._int_param(request.query, "take", DEFAULT_TAKE, 1, MAX_TAKE)
        skip = self._int_param(request.query, "skip", 0, 0, MAX_SKIP)
        records = await self.store.codes(account.login, code_id=code_id, take=take, skip=skip)
        return web.json_response({"status": "success", "data": [self.code_view(r) for r in records]})

    async def get_code(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise ApiError(404, f"no verification code {raw[:40]!r}")
        records = await self.store.codes(account.login, code_id=int(raw))
        if not records:
            raise ApiError(404, f"no verification code {raw!r} for this account")
        return web.json_response({"status": "success", "data": self.code_view(records[0])})

    # -- operations --------------------------------------------------------------

    async def simulate_endpoint(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        if self.simulate is None:
            raise ApiError(404, "no virtual devices in this daemon")
        body = await self._object_body(request)
        for key, limit in (("from", 32), ("text", protocol.MAX_TEXT), ("device", 64)):
            if isinstance(body.get(key), str) and len(body[key]) > limit:
                raise ApiError(400, f"'{key}' is longer than {limit} characters")
        try:
            result = await self.simulate(account, request.match_info["what"], body)
        except (ValueError, LookupError) as exc:
            raise ApiError(400, str(exc)) from None
        return web.json_response({"status": "success", "data": result})

    async def devices_endpoint(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        if self.devices_view is None:
            return web.json_response({"status": "success", "data": []})
        return web.json_response({"status": "success", "data": self.devices_view(account)})


def normalise_batch(raws: list[Any], offset: int, region: str | None) -> list[tuple[str | None, str | None]]:
    """(E.164, None) or (None, why not) for each number: what
    :class:`~bridge.workers.SplitPool` runs, here or in its worker process."""
    out: list[tuple[str | None, str | None]] = []
    for raw in raws:
        try:
            out.append((numbers.normalise(raw, region), None))
        except ValueError as exc:
            out.append((None, str(exc)))
    return out
