"""Verification codes on PostgreSQL (:class:`bridge.store.protocols.Codes`)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bridge.store.model import CODE_DEAD, CODE_PENDING, CODE_VERIFIED, Enqueued, NewJob, VerificationCode
from bridge.store.postgres.base import PgBase
from bridge.store.postgres.jobs import insert_jobs
from bridge.store.schema import CODE_COLUMNS, CODE_FROM

PENDING_SQL = f"c.state = '{CODE_PENDING}'"


async def _code_by_id(conn: asyncpg.Connection, code_id: int) -> VerificationCode | None:
    row = await conn.fetchrow(f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.id = $1", code_id)
    return VerificationCode(*row) if row else None


class PgCodes(PgBase):
    async def create_code(self, account: str, number: str, *, salt: bytes, digest: bytes, ttl_s: float,
                          max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        now = time.time()
        async with self._tx() as conn:
            [enqueued] = await insert_jobs(conn, self._recorder.batch(), account, [job], self.incarnation)
            code_id = await conn.fetchval(
                "INSERT INTO verification_codes (account, phone_number, salt, digest, created, expires, "
                "max_attempts, id_sms_api, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                account, number, salt, digest, now, now + ttl_s, max_attempts, enqueued.job.id_sms_api, CODE_PENDING)
            code = await _code_by_id(conn, code_id)
        assert code is not None
        self._queue_changed(account)
        return code, enqueued

    async def live_code(self, account: str, number: str, code_id: int | None = None) -> VerificationCode | None:
        statement = (f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.account = $1 AND c.phone_number = $2 "
                     f"AND {PENDING_SQL} AND c.attempts < c.max_attempts AND c.expires > $3")
        args: list[Any] = [account, number, time.time()]
        if code_id is not None:
            statement += " AND c.id = $4"
            args.append(code_id)
        async with self._read() as conn:
            row = await conn.fetchrow(statement + " ORDER BY c.id DESC LIMIT 1", *args)
        return VerificationCode(*row) if row else None

    async def use_code_try(self, code_id: int) -> VerificationCode | None:
        async with self._tx() as conn:
            done = await conn.fetchval("UPDATE verification_codes SET attempts = attempts + 1 WHERE id = $1 "
                                       "AND state = $2 AND attempts < max_attempts AND expires > $3 RETURNING id",
                                       code_id, CODE_PENDING, time.time())
            return await _code_by_id(conn, code_id) if done is not None else None

    async def finish_code(self, code_id: int, *, verified: bool) -> bool:
        async with self._tx() as conn:
            if verified:
                done = await conn.fetchval("UPDATE verification_codes SET state = $1, verified_at = $2 "
                                           "WHERE id = $3 AND state = $4 RETURNING id",
                                           CODE_VERIFIED, time.time(), code_id, CODE_PENDING)
                return done is not None
            await conn.execute("UPDATE verification_codes SET state = $1 WHERE id = $2 AND state = $3 "
                               "AND attempts >= max_attempts", CODE_DEAD, code_id, CODE_PENDING)
            return False

    async def codes(self, account: str, *, code_id: int | None = None, take: int = 50,
                    skip: int = 0) -> list[VerificationCode]:
        statement = f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.account = $1"
        args: list[Any] = [account]
        if code_id is not None:
            statement += " AND c.id = $2"
            args.append(code_id)
        n = len(args)
        async with self._read() as conn:
            rows = await conn.fetch(statement + f" ORDER BY c.id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
                                    *args, take, skip)
        return [VerificationCode(*r) for r in rows]
