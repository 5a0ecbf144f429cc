"""Keeping the store small and its counters cheap on PostgreSQL
(:class:`bridge.store.protocols.Upkeep`). Retention takes rows with ``SKIP
LOCKED`` in small batches, so that several daemons purging at once neither
wait for each other nor for the traffic."""

from __future__ import annotations

import collections

from bridge.store.postgres.base import PgBase, add_counts
from bridge.store.schema import SETTLED_STATES, job_counter


class PgUpkeep(PgBase):
    async def purge(self, before: float, *, limit: int = 500) -> int:
        async with self._tx() as conn:
            rows = await conn.fetch("SELECT id, state, priority FROM jobs WHERE created < $1 AND updated < $1 "
                                    "AND state = ANY($2::text[]) LIMIT $3 FOR UPDATE SKIP LOCKED",
                                    before, list(SETTLED_STATES), limit)
            counts: collections.Counter[str] = collections.Counter()
            if rows:
                ids = [r["id"] for r in rows]
                await conn.execute("DELETE FROM job_history WHERE job_id = ANY($1::bigint[])", ids)
                await conn.execute("DELETE FROM clicks WHERE code IN (SELECT code FROM links "
                                   "WHERE job_id = ANY($1::bigint[]))", ids)
                await conn.execute("DELETE FROM links WHERE job_id = ANY($1::bigint[])", ids)
                await conn.execute("DELETE FROM jobs WHERE id = ANY($1::bigint[])", ids)
                for r in rows:
                    counts[job_counter(r["state"], r["priority"])] -= 1
            events = await conn.fetch("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE created < $1 "
                                      "AND (delivered_at IS NOT NULL OR dead = 1) LIMIT $2 FOR UPDATE SKIP LOCKED) "
                                      "RETURNING delivered_at IS NOT NULL AS delivered, dead", before, limit)
            counts["outbox:delivered"] -= sum(1 for r in events if r["delivered"])
            counts["outbox:dead"] -= sum(1 for r in events if r["dead"])
            await add_counts(conn, counts)
            seen = await conn.fetch("DELETE FROM agent_events WHERE (device_id, event_id) IN (SELECT device_id, "
                                    "event_id FROM agent_events WHERE at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) "
                                    "RETURNING 1", before, limit)
        return len(rows) + len(events) + len(seen)

    async def fold_counters(self) -> None:
        async with self._read() as conn:  # a read: no write (nor lock) for an idle cluster
            if not await conn.fetchval("SELECT COUNT(*) > COUNT(DISTINCT name) FROM counters"):
                return  # one row a name: nothing written since the last fold, by any daemon
        async with self._tx() as conn:
            # Writers wait the few milliseconds this takes; readers do not.
            await conn.execute("LOCK TABLE counters IN EXCLUSIVE MODE")
            rows = await conn.fetch("SELECT name, SUM(n)::bigint AS n FROM counters GROUP BY name")
            await conn.execute("DELETE FROM counters")
            await conn.executemany("INSERT INTO counters (name, n) VALUES ($1, $2)",
                                   [(r["name"], r["n"]) for r in rows if r["n"]])
