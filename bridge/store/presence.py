"""What both backends share of :class:`bridge.store.protocols.Presence`: the
statements (``?`` placeholders) and the reading of a row."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

UPSERT_NODE = ("INSERT INTO nodes (node, started, seen, api_url) VALUES (?, ?, ?, ?) ON CONFLICT (node) "
               "DO UPDATE SET seen = excluded.seen, api_url = excluded.api_url")
# An offline row from one node does not hide the device online on another.
UPSERT_DEVICE = ("INSERT INTO presence (device_id, node, account, online, seen, info) VALUES (?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (device_id) DO UPDATE SET node = excluded.node, account = excluded.account, "
                 "online = excluded.online, seen = excluded.seen, info = excluded.info "
                 "WHERE presence.node = excluded.node OR excluded.online = 1 OR presence.online = 0 "
                 "OR presence.seen < ?")
SELECT_PRESENCE = ("SELECT p.device_id, p.node, p.account, p.online, p.seen, p.info, n.seen AS node_seen "
                   "FROM presence AS p LEFT JOIN nodes AS n ON n.node = p.node WHERE p.node <> ? "
                   "ORDER BY p.device_id")  # ? : a node whose rows are left out ('' : none)


def presence_rows(rows: Iterable[Any], now: float, stale_after: float) -> list[dict[str, Any]]:
    out = []
    for device_id, node, account, online, seen, info, node_seen in rows:
        alive = node_seen is not None and node_seen >= now - stale_after
        out.append({"device_id": device_id, "node": node, "account": account, "online": bool(online) and alive,
                    "seen": seen, "node_alive": alive, "info": json.loads(info)})
    return out
