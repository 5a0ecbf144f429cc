"""The webhook outbox on PostgreSQL (:class:`bridge.store.protocols.Outbox`).

Claims lock the rows they hand out (``FOR UPDATE SKIP LOCKED``) and lease
them: each event goes to one daemon's deliverer. An event is handed out only
while no earlier event of its (account, order_key) is undelivered and alive,
which holds across daemons: the earlier one, leased elsewhere, still counts.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bridge.store.model import OutboxEntry, OutboxEvent, OutboxRow
from bridge.store.postgres.base import PgBase, add_counts, sql
from bridge.store.postgres.recorder import OUTBOX_CHANNEL


class PgOutbox(PgBase):
    def set_outbox_listener(self, callback: Callable[[], None] | None) -> None:
        self._recorder.listener = callback

    async def record_events(self, events: Iterable[OutboxEvent], *, at: float | None = None) -> int:
        now = at or time.time()
        async with self._tx() as conn:
            batch = self._recorder.batch()
            for e in events:
                batch.record(e.account, e.kind, e.order_key, e.payload, now)
            return await batch.flush(conn)

    async def claim_outbox(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                           now: float | None = None) -> list[OutboxRow]:
        accounts = list(accounts)
        if limit <= 0 or not accounts:
            return []
        async with self._tx() as conn:
            return await self._claim(conn, accounts, limit, lease_s, now or time.time())

    async def _claim(self, conn: asyncpg.Connection, accounts: list[str], limit: int, lease_s: float,
                     now: float) -> list[OutboxRow]:
        rows = await conn.fetch(
            "SELECT id, account, kind, order_key, payload, created, attempts FROM outbox AS o "
            "WHERE delivered_at IS NULL AND dead = 0 AND next_attempt <= $1 AND account = ANY($2::text[]) "
            "AND NOT EXISTS (SELECT 1 FROM outbox AS p WHERE p.account = o.account "
            "AND p.order_key = o.order_key AND p.id < o.id AND p.delivered_at IS NULL AND p.dead = 0) "
            "ORDER BY next_attempt, id LIMIT $3 FOR UPDATE SKIP LOCKED", now, accounts, limit)
        if rows:
            await conn.execute("UPDATE outbox SET next_attempt = $1 WHERE id = ANY($2::bigint[])",
                               now + lease_s, [r[0] for r in rows])
        return [OutboxRow(*r) for r in rows]

    async def settle_outbox(self, *, delivered: Iterable[tuple[int, float]] = (),
                            retry: Iterable[tuple[int, float, str]] = (),
                            dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                            recovered: Iterable[str] = (), now: float | None = None) -> None:
        async with self._tx() as conn:
            await self._settle(conn, list(delivered), list(retry), list(dead), list(release), list(recovered),
                               now or time.time())

    async def settle_and_claim(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                               delivered: Iterable[tuple[int, float]] = (),
                               retry: Iterable[tuple[int, float, str]] = (),
                               dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                               recovered: Iterable[str] = (), now: float | None = None) -> list[OutboxRow]:
        now = now or time.time()
        accounts = list(accounts)
        async with self._tx() as conn:
            await self._settle(conn, list(delivered), list(retry), list(dead), list(release), list(recovered), now)
            if limit <= 0 or not accounts:
                return []
            return await self._claim(conn, accounts, limit, lease_s, now)

    async def _settle(self, conn: asyncpg.Connection, delivered: list[tuple[int, float]],
                      retry: list[tuple[int, float, str]], dead: list[tuple[int, str]], release: list[int],
                      recovered: list[str], now: float) -> None:
        counts: collections.Counter[str] = collections.Counter()
        if delivered:
            done = await conn.fetch(
                "UPDATE outbox AS o SET delivered_at = d.at, attempts = o.attempts + 1, last_error = NULL "
                "FROM unnest($1::bigint[], $2::float8[]) AS d(id, at) WHERE o.id = d.id "
                "AND o.delivered_at IS NULL RETURNING o.id",
                [id_ for id_, _ in delivered], [at for _, at in delivered])
            counts["outbox:delivered"] += len(done)
        if dead:
            done = await conn.fetch(
                "UPDATE outbox AS o SET dead = 1, attempts = o.attempts + 1, last_error = d.error "
                "FROM unnest($1::bigint[], $2::text[]) AS d(id, error) WHERE o.id = d.id AND o.dead = 0 "
                "RETURNING o.id", [id_ for id_, _ in dead], [error for _, error in dead])
            counts["outbox:dead"] += len(done)
        await add_counts(conn, counts)
        if release:
            await conn.execute("UPDATE outbox SET next_attempt = $1 WHERE id = ANY($2::bigint[])", now, release)
        if retry:
            await conn.executemany("UPDATE outbox SET attempts = attempts + 1, next_attempt = $1, "
                                   "last_error = $2 WHERE id = $3", [(at, error, id_) for id_, at, error in retry])
            await conn.executemany(
                "UPDATE outbox SET next_attempt = GREATEST(next_attempt, $1) WHERE delivered_at IS NULL "
                "AND dead = 0 AND id > $2 AND (account, order_key) = "
                "(SELECT account, order_key FROM outbox WHERE id = $2)", [(at, id_) for id_, at, _ in retry])
        if recovered:
            await conn.execute("UPDATE outbox SET next_attempt = $1 WHERE account = ANY($2::text[]) "
                               "AND delivered_at IS NULL AND dead = 0 AND attempts > 0 AND next_attempt > $1",
                               now, recovered)

    async def next_outbox_due(self, accounts: Iterable[str], now: float | None = None) -> float | None:
        accounts = list(accounts)
        if not accounts:
            return None
        async with self._read() as conn:
            due: float | None = await conn.fetchval(
                "SELECT MIN(next_attempt) FROM outbox WHERE delivered_at IS NULL AND dead = 0 "
                "AND next_attempt > $1 AND account = ANY($2::text[])", now or time.time(), accounts)
        return due

    async def outbox_counts(self) -> dict[str, int]:
        # pending: by the partial index (what waits); delivered and dead: their counters.
        rows = await self._fetch_dicts(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead = 0) AS pending, "
            "(SELECT COALESCE(SUM(n), 0)::bigint FROM counters WHERE name = 'outbox:delivered') AS delivered, "
            "(SELECT COALESCE(SUM(n), 0)::bigint FROM counters WHERE name = 'outbox:dead') AS dead")
        return rows[0]

    async def outbox(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if account is None:
            return await self._fetch_dicts("SELECT id, account, kind, order_key, payload, delivered_at FROM outbox "
                                           "ORDER BY id LIMIT $1", limit)
        return await self._fetch_dicts("SELECT id, account, kind, order_key, payload, delivered_at FROM outbox "
                                       "WHERE account = $1 ORDER BY id LIMIT $2", account, limit)

    async def outbox_entries(self, account: str, *, undelivered: bool = True,
                             limit: int = 200) -> list[OutboxEntry]:
        where = "account = $1" + (" AND delivered_at IS NULL" if undelivered else "")
        async with self._read() as conn:
            rows = await conn.fetch("SELECT id, account, kind, order_key, payload, created, attempts, next_attempt, "
                                    f"delivered_at, dead, last_error FROM outbox WHERE {where} "
                                    "ORDER BY id DESC LIMIT $2", account, limit)
        return [OutboxEntry(id=r[0], account=r[1], kind=r[2], order_key=r[3], payload=r[4], created=r[5],
                            attempts=r[6], next_attempt=r[7], delivered_at=r[8], dead=bool(r[9]), last_error=r[10])
                for r in rows]

    async def dead_letters(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        columns = "id, account, kind, order_key, payload, created, attempts, last_error"
        if account is None:
            return await self._fetch_dicts(f"SELECT {columns} FROM outbox WHERE dead = 1 ORDER BY id LIMIT $1", limit)
        return await self._fetch_dicts(f"SELECT {columns} FROM outbox WHERE dead = 1 AND account = $1 "
                                       "ORDER BY id LIMIT $2", account, limit)

    async def replay_dead(self, account: str | None = None, ids: Iterable[int] | None = None, *,
                          now: float | None = None) -> int:
        chosen = None if ids is None else list(ids)
        if chosen is not None and not chosen:
            return 0
        now = now or time.time()
        where, args = "dead = 1", list[Any]()
        if account is not None:
            where += " AND account = ?"
            args.append(account)
        if chosen is not None:
            where += " AND id = ANY(?::bigint[])"
            args.append(chosen)
        async with self._tx() as conn:
            replayed = await conn.fetch(sql(f"UPDATE outbox SET dead = 0, attempts = 0, created = ?, "
                                            f"next_attempt = ? WHERE {where} RETURNING id"), now, now, *args)
            await add_counts(conn, collections.Counter({"outbox:dead": -len(replayed)}))
            if replayed:  # other daemons' deliverers wake at commit
                await conn.execute("SELECT pg_notify($1, $2)", OUTBOX_CHANNEL, self._recorder.node)
        if replayed:
            self._recorder.poke()
        return len(replayed)
