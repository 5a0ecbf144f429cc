"""SMSFLOW's API (seed 002) on its own paths, answered in its own shapes:

- ``POST /auth2/get_token_auth/`` (``username``, ``password``, form or JSON):
  a token valid 24 h, stored only as its SHA-256; ``POST /auth2/revoke_token/``
  revokes the token presented (or, with ``all``, every token of its user).
- ``POST /apiv2/sms/`` sends (``number``, ``message``, ``sender_id``,
  ``campagn_id``, ``planned_date`` as unix time); ``GET /apiv2/sms/?id=``
  reads one, without ``id`` the last 1,000.
- ``POST /apiv2/smscode/`` sends a verification code, ``GET
  /apiv2/smscode/?id=`` lists them, ``POST /apiv2/verify_code/`` checks one.
- ``GET /apiv2/balance``: what the account can still send today (see
  :func:`balance`).

``Authorization: Token <token>`` (the account's access key is accepted too).
Refusals are ``{"code": <HTTP status>, "message": …}`` with that status."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from bridge.api import bodies, verification
from bridge.api._store import ApiTokenStore, CodeStore, Job, JobQueue, RecordStore, VerificationCode
from bridge.api.auth import Auth
from bridge.api.envelope import json_response
from bridge.api.errors import E_DISABLED, E_OPTED_OUT, ERROR_TEXT, ApiError
from bridge.api.judging import judge_message, require_number
from bridge.api.settings import Settings
from bridge.config import AccountConfig, Config
from bridge.core import jobstates as js
from bridge.core.sealing import Sealer
from device_agents.common import mask_number

log = logging.getLogger(__name__)

TOKEN_TTL_S = 24 * 3600.0
LAST_SMS = 1000
SMS_ID_RE = re.compile(r"SMS(\d{1,18})")
MAX_PLANNED = 10 ** 11  # unix seconds; beyond year 5000 is a mistake

# Our job states as SMSFLOW's status (number, name). SMSFLOW's send answer says
# "Reçu" at once, so "Reçu" (1) is read as "received by the gateway".
STATUS: dict[str, tuple[int, str]] = {
    js.QUEUED: (1, "Reçu"),
    js.DISPATCHED: (2, "En cours"),
    js.UNCONFIRMED: (2, "En cours"),
    js.SENT: (3, "Envoyé"),
    js.DELIVERED: (4, "Délivré"),
    js.FAILED: (5, "Échec"),
    js.EXPIRED: (6, "Annulé"),
    js.CANCELLED: (6, "Annulé"),
}
CODE_STATUS = {"pending": "Envoyé", "verified": "Validé", "expired": "Expiré", "dead": "Bloqué"}

Handler = Callable[[Any, web.Request], Awaitable[web.StreamResponse]]


def refusals(handler: Handler) -> Handler:
    """SMSFLOW's error shape for every refusal of the handler."""
    @functools.wraps(handler)
    async def wrapped(self: Any, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except ApiError as exc:
            status = exc.status if exc.status >= 400 else 400
            return json_response({"code": status, "message": exc.message, **exc.extra}, status=status)
    return wrapped


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode(errors="replace")).hexdigest()


def sms_id(job_id: int) -> str:
    return f"SMS{job_id:07d}"


def balance(config: Config, login: str, now: float, sent_today: Mapping[str, int] | None = None) -> int | None:
    """What the account can still send today, within its devices' caps (the
    dispatcher enforces them): for each device the least of its per-minute
    and per-hour rates over the time left until midnight (``api.timezone``)
    and what its daily cap leaves after ``sent_today`` (SMS it sent since
    midnight); summed. None when a device of the account has no cap at all
    (or it has no device)."""
    devices = [d for d in config.devices if d.account == login]
    if not devices:
        return None
    zone = ZoneInfo(config.api.timezone)
    local = dt.datetime.fromtimestamp(now, zone)
    midnight = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    minutes_left = max(0.0, (midnight - local).total_seconds() / 60)
    total = 0.0
    for d in devices:
        caps = []
        if d.max_per_minute > 0:
            caps.append(d.max_per_minute * minutes_left)
        if d.max_per_hour > 0:
            caps.append(d.max_per_hour * minutes_left / 60)
        if d.max_per_day > 0:
            caps.append(max(0.0, d.max_per_day - (sent_today or {}).get(d.id, 0)))
        if not caps:
            return None
        total += min(caps)
    return int(total)


def _local(ts: float | None, zone: ZoneInfo) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, zone).strftime("%d-%m-%Y %H:%M:%S")


def sms_info(*, job_id: int, state: str, created: float, due: float, phone_number: str, parts: int,
             device_id: str | None, message: str, id_sms_api: str, zone: ZoneInfo) -> dict[str, Any]:
    """SMSFLOW's SMS row (plus ``message`` and ``id_sms_api``)."""
    number, name = STATUS.get(state, (0, state))
    return {"sms_id": sms_id(job_id), "creation_date": _local(created, zone),
            "numero_destinataire": phone_number, "total_sms": str(parts), "campagne": None,
            "status": number, "sender": device_id or "simbridge",
            "planned_date": _local(due, zone) if due > created + 1 else "", "status_name": name,
            "message": message, "id_sms_api": id_sms_api}


def job_info(job: Job, zone: ZoneInfo) -> dict[str, Any]:
    return sms_info(job_id=job.id, state=job.state, created=job.created, due=job.due,
                    phone_number=job.phone_number, parts=job.parts, device_id=job.device_id, message=job.message,
                    id_sms_api=job.id_sms_api, zone=zone)


def row_info(row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """From a row of the store's message list (an outgoing SMS)."""
    return sms_info(job_id=row["job_id"], state=row["status"], created=row["created"], due=row["due"],
                    phone_number=row["phone_number"], parts=row["parts"], device_id=row["device_id"],
                    message=row["text"], id_sms_api=row["id_sms_api"], zone=zone)


def code_info(code: VerificationCode, now: float) -> dict[str, Any]:
    """SMSFLOW's code row. Its ``code`` is null: codes are kept hashed, never readable."""
    return {"id": code.id, "code": None, "timeout": int(round(code.expires - code.created)),
            "status_name": CODE_STATUS.get(code.status(now), code.status(now)), "phone_number": code.phone_number}


class Smsflow:
    def __init__(self, *, settings: Settings, auth: Auth, jobs: JobQueue, records: RecordStore, codes: CodeStore,
                 tokens: ApiTokenStore | None, on_enqueued: Callable[[], None], sealer: Sealer) -> None:
        self.settings = settings
        self.sealer = sealer
        self.auth = auth
        self.jobs = jobs
        self.records = records
        self.codes = codes
        self.tokens = tokens
        self.on_enqueued = on_enqueued

    # -- tokens ---------------------------------------------------------------------

    def _token_store(self) -> ApiTokenStore:
        if self.tokens is None:
            raise ApiError(404, "this server hands out no tokens")
        return self.tokens

    @refusals
    async def get_token(self, request: web.Request) -> web.StreamResponse:
        params = await bodies.params(request)
        username, password = params.get("username"), params.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            raise ApiError(400, "username and password are required")
        config = self.settings.config
        found = next((a for a in config.accounts if a.smsflow_username == username), None)
        expected = found.smsflow_password if found is not None else None
        ok = hmac.compare_digest((expected or "-" * 16).encode(), password.encode(errors="replace"))
        if found is None or not ok or expected is None:
            raise ApiError(401, "wrong username or password")
        if not found.enabled:
            raise ApiError(403, ERROR_TEXT[E_DISABLED])
        token = secrets.token_hex(20)
        await self._token_store().add_api_token(token_digest(token), found.login, username,
                                                time.time() + TOKEN_TTL_S)
        log.info("account %s: SMSFLOW token issued to %s (24 h)", found.login, username)
        return json_response({"token": token, "username": username, "code": 200, "is_admin": False,
                              "company_name": found.login,
                              "company_id": config.accounts.index(found) + 1})

    @refusals
    async def revoke_token(self, request: web.Request) -> web.StreamResponse:
        params = await bodies.params(request)
        token = self._presented(request)
        if token is None:
            raise ApiError(401, "send 'Authorization: Token <token>'")
        store = self._token_store()
        found = await store.api_token(token_digest(token))
        if found is None:
            raise ApiError(401, "unknown, expired or revoked token")
        everything = str(params.get("all", "")).lower() in ("1", "true", "yes")
        count = await (store.revoke_api_tokens(username=found[1]) if everything
                       else store.revoke_api_tokens(digest=token_digest(token)))
        return json_response({"code": 200, "message": "token revoked", "revoked": count})

    @staticmethod
    def _presented(request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        return value.strip() or None if scheme.lower() in ("token", "bearer") else None

    async def _account(self, request: web.Request, params: dict[str, Any] | None = None) -> AccountConfig:
        """The account of the SMSFLOW token presented (or of its access key)."""
        token = self._presented(request)
        if token is not None and self.tokens is not None:
            found = await self.tokens.api_token(token_digest(token))
            if found is not None:
                account = self.settings.config.account(found[0])
                if account is None or account.smsflow_username != found[1]:
                    raise ApiError(401, "this token's user is no longer configured")
                if not account.enabled:
                    raise ApiError(403, ERROR_TEXT[E_DISABLED])
                return account
        try:
            return self.auth.bearer_enabled(request, params)
        except ApiError as exc:
            if exc.status == 401:
                raise ApiError(401, "unknown, expired or revoked token") from None
            raise

    # -- SMS --------------------------------------------------------------------------

    @refusals
    async def send_sms(self, request: web.Request) -> web.StreamResponse:
        params = await bodies.params(request)
        account = await self._account(request, params)
        item: dict[str, Any] = {"phone_number": params.get("number"), "message": params.get("message")}
        planned = params.get("planned_date")
        due: float | None = None
        if planned not in (None, ""):
            text = str(planned).strip()
            if not text.isdigit() or int(text) > MAX_PLANNED:
                raise ApiError(400, "planned_date must be a unix time (whole seconds)")
            due = float(int(text))
        judged = judge_message(0, item, {}, 1, self.settings.rules)
        if judged.new is None:
            raise ApiError(400, judged.detail or ERROR_TEXT[judged.errors[0]])
        new = judged.new
        if due is not None:
            new = replace(new, due=due)
        if await self.records.opted_out(account.login, [new.phone_number]):
            raise ApiError(400, ERROR_TEXT[E_OPTED_OUT])
        [enqueued] = await self.jobs.enqueue(account.login, [new])
        self.on_enqueued()
        job = enqueued.job
        return json_response({"message": "success", "code": 200, "sms_id": sms_id(job.id),
                              "status": STATUS[job.state][1], "total_sms": job.parts,
                              "planned_date": str(int(due)) if due is not None else ""})

    @refusals
    async def sms_info(self, request: web.Request) -> web.StreamResponse:
        account = await self._account(request)
        zone = ZoneInfo(self.settings.config.api.timezone)
        wanted = request.query.get("id")
        if wanted:
            found = SMS_ID_RE.fullmatch(wanted.strip())
            job = await self.jobs.get_job_by_id(account.login, int(found.group(1))) if found else None
            if job is None:
                job = await self.jobs.get_job(account.login, wanted.strip()[:64])
            if job is None or job.kind != "sms":
                raise ApiError(404, f"no SMS {wanted[:40]!r}")
            return json_response({"data": [job_info(job, zone)]})
        rows = await self.records.messages(account.login, direction="out", take=LAST_SMS)
        return json_response({"data": [row_info(r, zone) for r in rows]})

    # -- codes ------------------------------------------------------------------------

    @refusals
    async def send_code(self, request: web.Request) -> web.StreamResponse:
        params = await bodies.params(request)
        account = await self._account(request, params)
        number = require_number(params.get("phone_number"), self.settings.region)
        v = verification
        ttl = bodies.int_param(params, "timeout", v.DEFAULT_TTL_S, v.MIN_TTL_S, v.MAX_TTL_S)
        if await self.records.opted_out(account.login, [number]):
            raise ApiError(409, ERROR_TEXT[E_OPTED_OUT])
        code = v.new_code(v.DEFAULT_LENGTH)
        salt = v.new_salt()
        digest = await asyncio.to_thread(v.digest, code, salt)
        job = v.code_job(number, v.DEFAULT_TEMPLATE, code, self.sealer,
                         ttl_s=min(float(ttl), self.settings.rules.ttl_s))
        record, _ = await self.codes.create_code(account.login, number, salt=salt, digest=digest, ttl_s=ttl,
                                                 max_attempts=v.MAX_TRIES, job=job)
        self.on_enqueued()
        log.info("account %s: verification code %d sent to %s", account.login, record.id, mask_number(number))
        # SMSFLOW answers the code to its caller (the account that sends it); it is stored hashed only.
        return json_response({"id": record.id, "code": code, "status": CODE_STATUS["pending"],
                              "numero": number})

    @refusals
    async def list_codes(self, request: web.Request) -> web.StreamResponse:
        account = await self._account(request)
        code_id = bodies.int_param(request.query, "id", 0, 0, 2 ** 62) or None
        records = await self.codes.codes(account.login, code_id=code_id, take=LAST_SMS)
        now = time.time()
        return json_response({"data": [code_info(r, now) for r in records]})

    @refusals
    async def verify_code(self, request: web.Request) -> web.StreamResponse:
        params = await bodies.params(request)
        account = await self._account(request, params)
        number = require_number(params.get("phone_number"), self.settings.region)
        candidate = str(params.get("code") or "").strip()[:32]
        if not candidate:
            raise ApiError(400, "code is required")
        live = await self.codes.live_code(account.login, number)
        spent = await self.codes.use_code_try(live.id) if live is not None else None
        if spent is None:
            raise ApiError(410, "aucun code valide pour ce numéro (no live code for this number)")
        ok = candidate.isdigit() and await asyncio.to_thread(verification.matches, candidate, spent.salt,
                                                             spent.digest)
        if ok and await self.codes.finish_code(spent.id, verified=True):
            return json_response({"code": 200, "message": "Le code a été validé"})
        await self.codes.finish_code(spent.id, verified=False)
        left = max(0, spent.max_attempts - spent.attempts)
        raise ApiError(400, f"Code invalide ({left} essai(s) restant(s))", tries_left=left)

    # -- balance ------------------------------------------------------------------------

    @refusals
    async def balance(self, request: web.Request) -> web.StreamResponse:
        account = await self._account(request)
        now = time.time()
        local = dt.datetime.fromtimestamp(now, ZoneInfo(self.settings.config.api.timezone))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        sent = await self.jobs.sent_counts(midnight)
        return json_response({"balance": balance(self.settings.config, account.login, now, sent),
                              "partner": account.login})
