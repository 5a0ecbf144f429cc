"""Daemons and their devices on PostgreSQL (:class:`bridge.store.protocols.Presence`):
each daemon's heartbeat and the devices it holds, read by every daemon (the
dispatcher leaves alone the jobs of a device online on another live box, and
``simbridge devices`` shows every box's devices)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from bridge.store.postgres.base import PgBase, sql
from bridge.store.presence import SELECT_PRESENCE, UPSERT_DEVICE, UPSERT_NODE, presence_rows


class PgPresence(PgBase):
    async def publish_presence(self, node: str, devices: Iterable[tuple[str, str, bool, dict[str, Any]]], *,
                               api_url: str = "", now: float | None = None) -> None:
        now = now or time.time()
        rows = [(d, node, a, int(o), now, json.dumps(info, default=str), now - 3600) for d, a, o, info in devices]
        async with self._tx() as conn:
            await conn.execute(sql(UPSERT_NODE), node, now, now, api_url)
            if rows:
                await conn.executemany(sql(UPSERT_DEVICE), rows)

    async def presence(self, *, stale_after: float, now: float | None = None,
                       other_than: str | None = None) -> list[dict[str, Any]]:
        async with self._read() as conn:
            rows = await conn.fetch(sql(SELECT_PRESENCE), other_than or "")
        return presence_rows((tuple(r) for r in rows), now or time.time(), stale_after)
