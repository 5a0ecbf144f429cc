"""Pairing tokens of devices on SQLite (:class:`bridge.store.protocols.DeviceAuth`):
only their SHA-256 is kept; revoking can also change a device's derived token."""

from __future__ import annotations

import sqlite3
import time

from bridge.store.sqlite.base import SqliteBase


class SqliteDeviceAuth(SqliteBase):
    async def add_device_token(self, device_id: str, digest: str) -> None:
        await self._run(self._tx(self._add_device_token), device_id, digest)

    def _add_device_token(self, db: sqlite3.Connection, device_id: str, digest: str) -> None:
        db.execute("INSERT INTO device_tokens (digest, device_id, created) VALUES (?, ?, ?)",
                   (digest, device_id, time.time()))

    async def revoke_device(self, device_id: str, *, bump_generation: bool) -> int:
        return await self._run(self._tx(self._revoke_device), device_id, bump_generation)

    def _revoke_device(self, db: sqlite3.Connection, device_id: str, bump_generation: bool) -> int:
        cur = db.execute("UPDATE device_tokens SET revoked = ? WHERE device_id = ? AND revoked IS NULL",
                         (time.time(), device_id))
        if bump_generation:
            db.execute("INSERT INTO devices (id, token_generation) VALUES (?, 1) ON CONFLICT (id) "
                       "DO UPDATE SET token_generation = token_generation + 1", (device_id,))
        return cur.rowcount

    async def device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        return await self._read(self._device_auth, device_id)

    def _device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        db = self._conn
        rows = db.execute("SELECT digest FROM device_tokens WHERE device_id = ? AND revoked IS NULL",
                          (device_id,)).fetchall()
        gen = db.execute("SELECT token_generation FROM devices WHERE id = ?", (device_id,)).fetchone()
        return frozenset(r[0] for r in rows), gen[0] if gen else 0
