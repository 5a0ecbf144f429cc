"""Verification codes, the SMSFLOW way: ``POST /api/v1/smscode`` sends a short
numeric code by SMS, ``POST /api/v1/verify_code`` checks one (each check
spends a try first), ``GET /api/v1/smscode[/{id}]`` lists them. Bearer
authentication; JSON or form bodies. Making, hashing and comparing the code
itself is :mod:`bridge.api.verification`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.api import bodies, verification
from bridge.api._store import CodeStore, RecordStore, VerificationCode
from bridge.api.auth import Auth
from bridge.api.envelope import iso, success
from bridge.api.errors import E_OPTED_OUT, ERROR_TEXT, ApiError
from bridge.api.judging import require_number
from bridge.api.notimation import DEFAULT_TAKE, MAX_SKIP, MAX_TAKE
from bridge.api.settings import Settings
from bridge.core.sealing import Sealer
from device_agents.common import mask_number

log = logging.getLogger(__name__)

MAX_CODE_ID = 2 ** 62


def code_view(code: VerificationCode, now: float) -> dict[str, Any]:
    status = code.status(now)
    return {"id": code.id, "phone_number": code.phone_number, "numero": code.phone_number,
            "status": status, "sms_status": code.sms_status, "id_sms_api": code.id_sms_api,
            "created_at": iso(code.created), "expires_at": iso(code.expires),
            "verified_at": iso(code.verified_at), "attempts": code.attempts,
            "tries_left": 0 if status in ("verified", "dead", "expired")
            else max(0, code.max_attempts - code.attempts)}


class Codes:
    def __init__(self, *, settings: Settings, auth: Auth, codes: CodeStore, records: RecordStore,
                 on_enqueued: Callable[[], None], sealer: Sealer) -> None:
        self.settings = settings
        self.sealer = sealer
        self.auth = auth
        self.codes = codes
        self.records = records
        self.on_enqueued = on_enqueued

    async def send(self, request: web.Request) -> web.Response:
        params = await bodies.params(request)
        account = self.auth.bearer_enabled(request, params)
        number = require_number(params.get("phone_number"), self.settings.region)
        v = verification
        ttl = bodies.int_param(params, "timeout", v.DEFAULT_TTL_S, v.MIN_TTL_S, v.MAX_TTL_S)
        length = bodies.int_param(params, "length", v.DEFAULT_LENGTH, v.MIN_LENGTH, v.MAX_LENGTH)
        template = params.get("message") or v.DEFAULT_TEMPLATE
        if not isinstance(template, str) or "{code}" not in template or len(template) > v.MAX_TEMPLATE_CHARS:
            raise ApiError(400, f"'message' must be a text of at most {v.MAX_TEMPLATE_CHARS} characters "
                                "containing {code}")
        if await self.records.opted_out(account.login, [number]):
            raise ApiError(409, ERROR_TEXT[E_OPTED_OUT], E_OPTED_OUT)
        code = v.new_code(length)
        salt = v.new_salt()
        digest = await asyncio.to_thread(v.digest, code, salt)
        job = v.code_job(number, template, code, self.sealer, ttl_s=min(float(ttl), self.settings.rules.ttl_s))
        record, _ = await self.codes.create_code(account.login, number, salt=salt, digest=digest, ttl_s=ttl,
                                                 max_attempts=v.MAX_TRIES, job=job)
        self.on_enqueued()
        log.info("account %s: verification code %d sent to %s", account.login, record.id, mask_number(number))
        return success(code_view(record, time.time()))

    async def verify(self, request: web.Request) -> web.Response:
        params = await bodies.params(request)
        account = self.auth.bearer(request, params)
        number = require_number(params.get("phone_number"), self.settings.region)
        candidate = params.get("code")
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            candidate = str(candidate)
        if not isinstance(candidate, str) or not candidate.strip():
            raise ApiError(400, "'code' is required")
        candidate = candidate.strip()[:32]
        code_id = bodies.int_param(params, "id", 0, 0, MAX_CODE_ID) or None
        live = await self.codes.live_code(account.login, number, code_id)
        spent = await self.codes.use_code_try(live.id) if live is not None else None
        if spent is None:
            raise ApiError(410, "no live code for this number: none was sent, or it expired, was used, "
                                "or ran out of tries")
        ok = candidate.isdigit() and await asyncio.to_thread(verification.matches, candidate, spent.salt,
                                                             spent.digest)
        if ok and await self.codes.finish_code(spent.id, verified=True):
            [record] = await self.codes.codes(account.login, code_id=spent.id)
            return success(code_view(record, time.time()), message="code verified")
        await self.codes.finish_code(spent.id, verified=False)
        left = max(0, spent.max_attempts - spent.attempts)
        raise ApiError(422, f"wrong code ({left} {'try' if left == 1 else 'tries'} left)" if left
                       else "wrong code; no try left: the code is dead", id=spent.id, tries_left=left)

    async def list_codes(self, request: web.Request) -> web.Response:
        account = self.auth.bearer(request)
        code_id = bodies.int_param(request.query, "id", 0, 0, MAX_CODE_ID) or None
        take = bodies.int_param(request.query, "take", DEFAULT_TAKE, 1, MAX_TAKE)
        skip = bodies.int_param(request.query, "skip", 0, 0, MAX_SKIP)
        records = await self.codes.codes(account.login, code_id=code_id, take=take, skip=skip)
        now = time.time()
        return success([code_view(r, now) for r in records])

    async def get_code(self, request: web.Request) -> web.Response:
        account = self.auth.bearer(request)
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise ApiError(404, f"no verification code {raw[:40]!r}")
        records = await self.codes.codes(account.login, code_id=int(raw))
        if not records:
            raise ApiError(404, f"no verification code {raw!r} for this account")
        return success(code_view(records[0], time.time()))
