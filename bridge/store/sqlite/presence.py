"""Daemons and their devices on SQLite (:class:`bridge.store.protocols.Presence`):
one daemon per file, so this mostly serves ``simbridge devices`` alike on
both backends."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from bridge.store.sqlite.base import SqliteBase

UPSERT_NODE = ("INSERT INTO nodes (node, started, seen, api_url) VALUES (?, ?, ?, ?) ON CONFLICT (node) "
               "DO UPDATE SET seen = excluded.seen, api_url = excluded.api_url")
# An offline row from one node does not hide the device online on another.
UPSERT_DEVICE = ("INSERT INTO presence (device_id, node, account, online, seen, info) VALUES (?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (device_id) DO UPDATE SET node = excluded.node, account = excluded.account, "
                 "online = excluded.online, seen = excluded.seen, info = excluded.info "
                 "WHERE presence.node = excluded.node OR excluded.online = 1 OR presence.online = 0 "
                 "OR presence.seen < ?")
SELECT_PRESENCE = ("SELECT p.device_id, p.node, p.account, p.online, p.seen, p.info, n.seen AS node_seen "
                   "FROM presence AS p LEFT JOIN nodes AS n ON n.node = p.node ORDER BY p.device_id")


def presence_rows(rows: Iterable[Any], now: float, stale_after: float) -> list[dict[str, Any]]:
    out = []
    for device_id, node, account, online, seen, info, node_seen in rows:
        alive = node_seen is not None and node_seen >= now - stale_after
        out.append({"device_id": device_id, "node": node, "account": account, "online": bool(online) and alive,
                    "seen": seen, "node_alive": alive, "info": json.loads(info)})
    return out


class SqlitePresence(SqliteBase):
    async def publish_presence(self, node: str, devices: Iterable[tuple[str, str, bool, dict[str, Any]]], *,
                               api_url: str = "", now: float | None = None) -> None:
        await self._run(self._tx(self._publish), node, list(devices), api_url, now or time.time())

    def _publish(self, db: sqlite3.Connection, node: str, devices: list[tuple[str, str, bool, dict[str, Any]]],
                 api_url: str, now: float) -> None:
        db.execute(UPSERT_NODE, (node, now, now, api_url))
        db.executemany(UPSERT_DEVICE, [(d, node, a, int(o), now, json.dumps(info, default=str), now - 3600)
                                       for d, a, o, info in devices])

    async def presence(self, *, stale_after: float, now: float | None = None) -> list[dict[str, Any]]:
        rows = await self._run(lambda: self._conn.execute(SELECT_PRESENCE).fetchall())
        return presence_rows(rows, now or time.time(), stale_after)
