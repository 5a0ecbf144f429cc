"""Verification codes on SQLite (:class:`bridge.store.protocols.Codes`): kept
hashed, each created in one transaction with the SMS job that carries it."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from bridge.store.model import CODE_DEAD, CODE_PENDING, CODE_VERIFIED, URGENT, Enqueued, NewJob, VerificationCode
from bridge.store.schema import CODE_COLUMNS, CODE_FROM
from bridge.store.sqlite.base import SqliteBase
from bridge.store.sqlite.jobs import insert_jobs

PENDING_SQL = f"c.state = '{CODE_PENDING}'"


class SqliteCodes(SqliteBase):
    async def create_code(self, account: str, number: str, *, salt: bytes, digest: bytes, ttl_s: float,
                          max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        urgent = job.priority >= URGENT  # a code's SMS is priority 2 (bridge.api.verification)
        out = await self._run(self._tx(self._create_code, urgent=urgent), account, number, salt, digest, ttl_s,
                              max_attempts, job)
        self._enqueued(account, urgent)
        return out

    def _create_code(self, db: sqlite3.Connection, account: str, number: str, salt: bytes, digest: bytes,
                     ttl_s: float, max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        now = time.time()
        [enqueued] = insert_jobs(db, self._recorder, account, [job], self.incarnation)
        cur = db.execute("INSERT INTO verification_codes (account, phone_number, salt, digest, created, expires, "
                         "max_attempts, id_sms_api, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (account, number, salt, digest, now, now + ttl_s, max_attempts, enqueued.job.id_sms_api,
                          CODE_PENDING))
        assert cur.lastrowid is not None
        code = self._code_by_id(db, cur.lastrowid)
        assert code is not None
        return code, enqueued

    @staticmethod
    def _code_by_id(db: sqlite3.Connection, code_id: int) -> VerificationCode | None:
        row = db.execute(f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.id = ?", (code_id,)).fetchone()
        return VerificationCode(*row) if row else None

    async def live_code(self, account: str, number: str, code_id: int | None = None) -> VerificationCode | None:
        return await self._read(self._live_code, account, number, code_id)

    def _live_code(self, account: str, number: str, code_id: int | None) -> VerificationCode | None:
        sql = (f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.account = ? AND c.phone_number = ? "
               f"AND {PENDING_SQL} AND c.attempts < c.max_attempts AND c.expires > ?")
        params: tuple[Any, ...] = (account, number, time.time())
        if code_id is not None:
            sql, params = sql + " AND c.id = ?", (*params, code_id)
        row = self._conn.execute(sql + " ORDER BY c.id DESC LIMIT 1", params).fetchone()
        return VerificationCode(*row) if row else None

    async def use_code_try(self, code_id: int) -> VerificationCode | None:
        return await self._run(self._tx(self._use_code_try), code_id)

    def _use_code_try(self, db: sqlite3.Connection, code_id: int) -> VerificationCode | None:
        cur = db.execute("UPDATE verification_codes SET attempts = attempts + 1 WHERE id = ? AND state = ? "
                         "AND attempts < max_attempts AND expires > ?", (code_id, CODE_PENDING, time.time()))
        return self._code_by_id(db, code_id) if cur.rowcount == 1 else None

    async def finish_code(self, code_id: int, *, verified: bool) -> bool:
        return await self._run(self._tx(self._finish_code), code_id, verified)

    def _finish_code(self, db: sqlite3.Connection, code_id: int, verified: bool) -> bool:
        if verified:
            cur = db.execute("UPDATE verification_codes SET state = ?, verified_at = ? WHERE id = ? AND state = ?",
                             (CODE_VERIFIED, time.time(), code_id, CODE_PENDING))
            return cur.rowcount == 1
        db.execute("UPDATE verification_codes SET state = ? WHERE id = ? AND state = ? "
                   "AND attempts >= max_attempts", (CODE_DEAD, code_id, CODE_PENDING))
        return False

    async def codes(self, account: str, *, code_id: int | None = None, take: int = 50,
                    skip: int = 0) -> list[VerificationCode]:
        return await self._read(self._codes, account, code_id, take, skip)

    def _codes(self, account: str, code_id: int | None, take: int, skip: int) -> list[VerificationCode]:
        sql = f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.account = ?"
        params: tuple[Any, ...] = (account,)
        if code_id is not None:
            sql, params = sql + " AND c.id = ?", (account, code_id)
        rows = self._conn.execute(sql + " ORDER BY c.id DESC LIMIT ? OFFSET ?", (*params, take, skip)).fetchall()
        return [VerificationCode(*r) for r in rows]
