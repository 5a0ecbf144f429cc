"""API tokens on PostgreSQL (:class:`bridge.store.protocols.ApiTokens`):
SMSFLOW's 24-hour tokens, kept only as their SHA-256, revocable."""

from __future__ import annotations

import time

from bridge.store.postgres.base import PgBase


class PgApiTokens(PgBase):
    async def add_api_token(self, digest: str, account: str, username: str, expires: float) -> None:
        now = time.time()
        async with self._tx() as conn:
            await conn.execute("DELETE FROM api_tokens WHERE expires < $1", now - 86400.0)  # long dead: forgotten
            await conn.execute("INSERT INTO api_tokens (digest, account, username, created, expires) "
                               "VALUES ($1, $2, $3, $4, $5)", digest, account, username, now, expires)

    async def api_token(self, digest: str, *, now: float | None = None) -> tuple[str, str] | None:
        async with self._read() as conn:
            row = await conn.fetchrow("SELECT account, username FROM api_tokens WHERE digest = $1 "
                                      "AND revoked IS NULL AND expires > $2", digest, now or time.time())
        return (row[0], row[1]) if row else None

    async def revoke_api_tokens(self, *, digest: str | None = None, username: str | None = None) -> int:
        if digest is None and username is None:
            return 0
        async with self._tx() as conn:
            revoked = await conn.fetch("UPDATE api_tokens SET revoked = $1 WHERE revoked IS NULL "
                                       "AND (digest = $2 OR username = $3) RETURNING digest",
                                       time.time(), digest, username)
        return len(revoked)
