"""Pairing tokens of devices on PostgreSQL (:class:`bridge.store.protocols.DeviceAuth`)."""

from __future__ import annotations

import time

from bridge.store.postgres.base import PgBase


class PgDeviceAuth(PgBase):
    async def add_device_token(self, device_id: str, digest: str) -> None:
        async with self._tx() as conn:
            await conn.execute("INSERT INTO device_tokens (digest, device_id, created) VALUES ($1, $2, $3)",
                               digest, device_id, time.time())

    async def revoke_device(self, device_id: str, *, bump_generation: bool) -> int:
        async with self._tx() as conn:
            revoked = await conn.fetch("UPDATE device_tokens SET revoked = $1 WHERE device_id = $2 "
                                       "AND revoked IS NULL RETURNING digest", time.time(), device_id)
            if bump_generation:
                await conn.execute("INSERT INTO devices (id, token_generation) VALUES ($1, 1) ON CONFLICT (id) "
                                   "DO UPDATE SET token_generation = devices.token_generation + 1", device_id)
        return len(revoked)

    async def device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        async with self._read() as conn:
            rows = await conn.fetch("SELECT digest FROM device_tokens WHERE device_id = $1 AND revoked IS NULL",
                                    device_id)
            gen = await conn.fetchval("SELECT token_generation FROM devices WHERE id = $1", device_id)
        return frozenset(r[0] for r in rows), gen or 0
