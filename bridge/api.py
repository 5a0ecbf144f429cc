"""The HTTP API, compatible with inSIM's (seed 000) and its older Ardary form.

``POST /api/v1/sendsms`` takes the inSIM body (``header`` with ``login`` and
``accessKey``; ``messages`` with ``phone_number``, ``message``, ``url``,
``priorite``, ``date_to_send``, ``id_sms_api``) and answers a JSON array, one
object per message. Each message is judged on its own: the valid ones of a
batch are accepted even when others carry an error code.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo

import phonenumbers
from aiohttp import web

from device_agents.modem.gsm7 import segment_count

from .config import AccountConfig, Config
from .store import Enqueued, Job, NewJob, Store

log = logging.getLogger(__name__)

# inSIM / Ardary error codes (seed 003).
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
LINK_PLACEHOLDERS = ("[Lien_Tracking]", "[Lien]", "[Link]")
MAX_MESSAGE_CHARS = 5000
ACCOUNT_KEY = web.AppKey("account_lookup", object)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def iso_utc(ts: float) -> str:
    """``2025-10-29T10:00:00.000Z``, as inSIM writes times."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(ts * 1000) % 1000:03d}Z"


def normalise_number(raw: Any, region: str | None = None) -> str:
    """E.164 form of ``raw``; ValueError saying why it is not a valid number."""
    if not isinstance(raw, (str, int)) or isinstance(raw, bool):
        raise ValueError("phone_number must be a string")
    text = str(raw).strip()
    if not text:
        raise ValueError("phone_number is empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone_number {text!r} cannot be parsed: {exc._msg}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"phone_number {text!r} is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One message of a request, judged."""
    index: int
    new: NewJob | None
    errors: tuple[str, ...]
    detail: str | None
    phone_number: str
    message: str


class Api:
    def __init__(self, *, config: Config, store: Store, on_enqueued: Callable[[], None],
                 extra_routes: Callable[[web.Application], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.on_enqueued = on_enqueued
        self.extra_routes = extra_routes
        self.simulate: Callable[[AccountConfig, str, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        self.devices_view: Callable[[AccountConfig | None], list[dict[str, Any]]] | None = None

    def reload(self, config: Config) -> None:
        self.config = config

    # -- application ------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.api.max_body_bytes,
                              middlewares=[self._errors])
        app.router.add_post("/api/v1/sendsms", self.sendsms)
        app.router.add_post("/api/sendSms", self.sendsms)
        app.router.add_get("/api/v1/sms/{id}", self.get_sms)
        app.router.add_post("/api/v1/simulate/{what}", self.simulate_endpoint)
        app.router.add_get("/api/v1/devices", self.devices_endpoint)
        app.router.add_get("/healthz", self.healthz)
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
            return web.json_response(body, status=exc.status)
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"status": "error", "message":
                                      f"request body over {self.config.api.max_body_bytes} bytes"}, status=413)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # -- auth ---------------------------------------------------------------------

    def check_login(self, login: Any, key: Any) -> AccountConfig | None:
        if not isinstance(login, str) or not isinstance(key, str):
            return None
        account = self.config.account(login)
        if account is None:
            hmac.compare_digest(key.encode(), b"-" * 16)  # same work either way
            return None
        if not hmac.compare_digest(account.access_key.encode(), key.encode()):
            return None
        return account

    def bearer_account(self, request: web.Request) -> AccountConfig:
        """Account of ``Authorization: Bearer KEY`` (or ``?api_key=KEY``)."""
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.query.get("api_key")
        if not key:
            raise ApiError(401, "missing access key: send 'Authorization: Bearer <access key>'", "#001")
        for account in self.config.accounts:
            if hmac.compare_digest(account.access_key.encode(), key.encode()):
                return account
        raise ApiError(401, "unknown access key", "#001")

    # -- sendsms ------------------------------------------------------------------

    async def _json_body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from None

    def _prepare(self, index: int, item: Any, header: dict[str, Any]) -> Prepared:
        if not isinstance(item, dict):
            return Prepared(index, None, (E_UNKNOWN,), f"messages[{index}] must be an object", "", "")
        number_raw = item.get("phone_number", item.get("phonenumber"))
        text = item.get("message")
        shown_number = str(number_raw) if isinstance(number_raw, (str, int)) else ""
        shown_text = text if isinstance(text, str) else ""
        errors: list[str] = []
        details: list[str] = []
        if not isinstance(text, str) or not text.strip():
            errors.append(E_EMPTY)
            details.append("message is empty")
        elif len(text) > MAX_MESSAGE_CHARS:
            errors.append(E_UNKNOWN)
            details.append(f"message is longer than {MAX_MESSAGE_CHARS} characters")
        try:
            number = normalise_number(number_raw)
        except ValueError as exc:
            errors.append(E_NUMBER)
            details.append(str(exc))
            number = shown_number
        priority = item.get("priorite", item.get("priority", 1))
        if isinstance(priority, str) and priority.strip().isdigit():
            priority = int(priority)
        if isinstance(priority, bool) or priority not in (0, 1, 2):
            errors.append(E_UNKNOWN)
            details.append(f"priorite must be 0, 1 or 2, not {priority!r}")
            priority = 1
        due = None
        when = item.get("date_to_send", header.get("date_to_send"))
        if when not in (None, ""):
            try:
                due = self._parse_date(when)
            except ValueError as exc:
                errors.append(E_UNKNOWN)
                details.append(str(exc))
        id_sms_api = item.get("id_sms_api")
        if id_sms_api is not None and (not isinstance(id_sms_api, (str, int)) or isinstance(id_sms_api, bool)
                                       or not 0 < len(str(id_sms_api)) <= 64):
            errors.append(E_UNKNOWN)
            details.append("id_sms_api must be a string of 1 to 64 characters")
            id_sms_api = None
        url = item.get("url")
        if url is not None and not isinstance(url, str):
            errors.append(E_UNKNOWN)
            details.append("url must be a string")
            url = None
        if errors:
            return Prepared(index, None, tuple(dict.fromkeys(errors)), "; ".join(details), number, shown_text)
        text = self._links(text, url)
        seg = segment_count(text)
        new = NewJob(kind="sms", phone_number=number, message=text,
                     id_sms_api=str(id_sms_api) if id_sms_api is not None else None,
                     url=url, priority=priority, due=due, ttl_s=self.config.dispatcher.ttl_s,
                     parts=seg.parts, encoding=seg.encoding)
        return Prepared(index, new, (), None, number, text)

    def _links(self, text: str, url: str | None) -> str:
        if not url:
            return text
        for placeholder in LINK_PLACEHOLDERS:
            text = text.replace(placeholder, url)
        return text

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
        return when.timestamp()

    async def sendsms(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object with 'header' and 'messages'")
        header = body.get("header")
        ardary = isinstance(header, list) or request.path == "/api/sendSms"
        if isinstance(header, list):
            header = header[0] if header and isinstance(header[0], dict) else {}
        if not isinstance(header, dict):
            raise ApiError(400, "'header' must be an object with 'login' and 'accessKey'", E_AUTH)
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ApiError(400, "'messages' must be a list of messages")
        if len(messages) > self.config.api.max_messages:
            raise ApiError(413, f"{len(messages)} messages in one request; at most "
                                f"{self.config.api.max_messages}")
        key = header.get("accessKey", header.get("accesskey", header.get("access_key")))
        account = self.check_login(header.get("login"), key)
        prepared = [self._prepare(i, m, header) for i, m in enumerate(messages)]
        if account is None or not account.enabled:
            code = E_AUTH if account is None else E_DISABLED
            results = [self._answer(None, p, errors=(code,), detail=ERROR_TEXT[code]) for p in prepared]
            return self._respond(results, ardary, status=401 if account is None else 403)
        good = [p for p in prepared if p.new is not None]
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
        item = p.new.id_sms_api if p.new else None
        return {"id_sms_api": item, "sms_per_message": 0, "user": login, "sent_time": None,
                "phone_number": p.phone_number, "message": p.message, "sent": 0,
                "error": list(errors), "error_message": detail or p.detail or ERROR_TEXT[errors[0]]}

    def _respond(self, results: list[dict[str, Any]], ardary: bool, status: int = 200) -> web.Response:
        if ardary:
            body: Any = {"data": results}
            failed = sum(1 for r in results if not r["sent"])
            if failed:
                body["count_sent"] = len(results) - failed
            return web.json_response(body, status=status)
        return web.json_response(results, status=status)

    # -- reading -------------------------------------------------------------------

    async def get_sms(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        job = await self.store.get_job(account.login, request.match_info["id"])
        if job is None:
            raise ApiError(404, f"no SMS with id {request.match_info['id']!r} for this account")
        history = await self.store.history(job.id)
        return web.json_response({"status": "success", "data": self.job_view(job, history)})

    @staticmethod
    def job_view(job: Job, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id_sms_api": job.id_sms_api, "direction": "outgoing", "type": job.kind,
            "phone_number": job.phone_number, "message": job.message, "status": job.state,
            "reason": job.reason, "priority": job.priority, "date_to_send": iso_utc(job.due),
            "created_at": iso_utc(job.created), "updated_at": iso_utc(job.updated),
            "sms_per_message": job.parts, "encoding": job.encoding, "device_id": job.device_id,
            "attempts": job.attempts}
        if history is not None:
            view["history"] = [{"status": h["state"], "at": iso_utc(h["at"]), "device_id": h["device_id"],
                                "reason": h["reason"]} for h in history]
        return view

    # -- operations --------------------------------------------------------------

    async def simulate_endpoint(self, request: web.Request) -> web.Response:
        account = self.bearer_account(request)
        if self.simulate is None:
            raise ApiError(404, "no virtual devices in this daemon")
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
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
