"""Daemons and their devices on SQLite (:class:`bridge.store.protocols.Presence`):
one daemon per file, so this mostly serves ``simbridge devices`` alike on
both backends."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from bridge.store.presence import SELECT_PRESENCE, UPSERT_DEVICE, UPSERT_NODE, presence_rows
from bridge.store.sqlite.base import SqliteBase


class SqlitePresence(SqliteBase):
    async def publish_presence(self, node: str, devices: Iterable[tuple[str, str, bool, dict[str, Any]]], *,
                               api_url: str = "", now: float | None = None) -> None:
        await self._run(self._tx(self._publish), node, list(devices), api_url, now or time.time())

    def _publish(self, db: sqlite3.Connection, node: str, devices: list[tuple[str, str, bool, dict[str, Any]]],
                 api_url: str, now: float) -> None:
        db.execute(UPSERT_NODE, (node, now, now, api_url))
        db.executemany(UPSERT_DEVICE, [(d, node, a, int(o), now, json.dumps(info, default=str), now - 3600)
                                       for d, a, o, info in devices])

    async def presence(self, *, stale_after: float, now: float | None = None,
                       other_than: str | None = None) -> list[dict[str, Any]]:
        rows = await self._read(lambda: self._conn.execute(SELECT_PRESENCE, (other_than or "",)).fetchall())
        return presence_rows(rows, now or time.time(), stale_after)
