"""API tokens on SQLite (:class:`bridge.store.protocols.ApiTokens`): SMSFLOW's
24-hour tokens, kept only as their SHA-256, revocable."""

from __future__ import annotations

import sqlite3
import time

from bridge.store.sqlite.base import SqliteBase


class SqliteApiTokens(SqliteBase):
    async def add_api_token(self, digest: str, account: str, username: str, expires: float) -> None:
        await self._run(self._tx(self._add_api_token), digest, account, username, expires)

    def _add_api_token(self, db: sqlite3.Connection, digest: str, account: str, username: str,
                       expires: float) -> None:
        now = time.time()
        db.execute("DELETE FROM api_tokens WHERE expires < ?", (now - 86400.0,))  # long dead: forgotten
        db.execute("INSERT INTO api_tokens (digest, account, username, created, expires) VALUES (?, ?, ?, ?, ?)",
                   (digest, account, username, now, expires))

    async def api_token(self, digest: str, *, now: float | None = None) -> tuple[str, str] | None:
        row = await self._read(self._select_dicts, "SELECT account, username FROM api_tokens WHERE digest = ? "
                              "AND revoked IS NULL AND expires > ?", (digest, now or time.time()))
        return (row[0]["account"], row[0]["username"]) if row else None

    async def revoke_api_tokens(self, *, digest: str | None = None, username: str | None = None) -> int:
        return await self._run(self._tx(self._revoke_api_tokens), digest, username)

    def _revoke_api_tokens(self, db: sqlite3.Connection, digest: str | None, username: str | None) -> int:
        if digest is None and username is None:
            return 0
        cur = db.execute("UPDATE api_tokens SET revoked = ? WHERE revoked IS NULL "
                         "AND (digest = ? OR username = ?)", (time.time(), digest, username))
        return cur.rowcount
