"""Keeping the store small and its counters cheap on SQLite
(:class:`bridge.store.protocols.Upkeep`): retention in small batches, each
its own short transaction, and the counters' deltas folded."""

from __future__ import annotations

import collections
import sqlite3

from bridge.store.schema import SETTLED_STATES, job_counter
from bridge.store.sqlite.base import SqliteBase, add_counts, marks


class SqliteUpkeep(SqliteBase):
    async def purge(self, before: float, *, limit: int = 500) -> int:
        return await self._run(self._tx(self._purge), before, limit)

    def _purge(self, db: sqlite3.Connection, before: float, limit: int) -> int:
        rows = db.execute(f"SELECT id, state, priority FROM jobs WHERE created < ? AND updated < ? "
                          f"AND state IN ({marks(len(SETTLED_STATES))}) LIMIT ?",
                          (before, before, *SETTLED_STATES, limit)).fetchall()
        counts: collections.Counter[str] = collections.Counter()
        if rows:
            ids = [(r[0],) for r in rows]
            db.executemany("DELETE FROM job_history WHERE job_id = ?", ids)
            db.executemany("DELETE FROM clicks WHERE code IN (SELECT code FROM links WHERE job_id = ?)", ids)
            db.executemany("DELETE FROM links WHERE job_id = ?", ids)
            db.executemany("DELETE FROM jobs WHERE id = ?", ids)
            for _, state, priority in rows:
                counts[job_counter(state, priority)] -= 1
        events = db.execute("SELECT id, delivered_at IS NOT NULL, dead FROM outbox WHERE created < ? "
                            "AND (delivered_at IS NOT NULL OR dead = 1) LIMIT ?", (before, limit)).fetchall()
        if events:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in events])
            counts["outbox:delivered"] -= sum(1 for r in events if r[1])
            counts["outbox:dead"] -= sum(1 for r in events if r[2])
        add_counts(db, counts)
        seen = db.execute("DELETE FROM agent_events WHERE (device_id, event_id) IN (SELECT device_id, event_id "
                          "FROM agent_events WHERE at < ? LIMIT ?)", (before, limit)).rowcount
        return len(rows) + len(events) + seen

    _folded_at = -1  # ``_writes`` when the last fold was asked (its own write included)

    async def fold_counters(self) -> None:
        # Counter deltas come only with writes: after none (an idle daemon), nothing to
        # fold, and no transaction (nor fsync) every few seconds for it.
        if self._writes == self._folded_at:
            return
        mark = self._writes + 1
        await self._run(self._tx(self._fold))
        self._folded_at = mark

    def _fold(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT name, SUM(n) FROM counters GROUP BY name").fetchall()
        db.execute("DELETE FROM counters")
        db.executemany("INSERT INTO counters (name, n) VALUES (?, ?)", [(name, n) for name, n in rows if n])
