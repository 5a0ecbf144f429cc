"""The webhook outbox on SQLite (:class:`bridge.store.protocols.Outbox`)."""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from bridge.store.model import OutboxEntry, OutboxEvent, OutboxRow
from bridge.store.sqlite.base import SqliteBase, add_counts, marks


class SqliteOutbox(SqliteBase):
    def set_outbox_listener(self, callback: Callable[[], None] | None) -> None:
        self._recorder.listener = callback

    async def record_events(self, events: Iterable[OutboxEvent], *, at: float | None = None) -> int:
        return await self._run(self._tx(self._record_events), list(events), at or time.time())

    def _record_events(self, db: sqlite3.Connection, events: list[OutboxEvent], now: float) -> int:
        return sum(self._recorder.record(db, e.account, e.kind, e.order_key, e.payload, now) for e in events)

    async def claim_outbox(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                           now: float | None = None) -> list[OutboxRow]:
        accounts = list(accounts)
        if limit <= 0 or not accounts:
            return []
        return await self._run(self._tx(self._claim_outbox), accounts, limit, lease_s, now or time.time())

    def _claim_outbox(self, db: sqlite3.Connection, accounts: list[str], limit: int, lease_s: float,
                      now: float) -> list[OutboxRow]:
        rows = db.execute(
            "SELECT id, account, kind, order_key, payload, created, attempts FROM outbox AS o "
            # "+account": walk the due events in order (outbox_pending), not the whole account.
            f"WHERE delivered_at IS NULL AND dead = 0 AND next_attempt <= ? AND +account IN ({marks(len(accounts))}) "
            "AND NOT EXISTS (SELECT 1 FROM outbox AS p WHERE p.account = o.account "
            "AND p.order_key = o.order_key AND p.id < o.id AND p.delivered_at IS NULL AND p.dead = 0) "
            "ORDER BY next_attempt, id LIMIT ?", (now, *accounts, limit)).fetchall()
        if rows:
            db.executemany("UPDATE outbox SET next_attempt = ? WHERE id = ?", [(now + lease_s, r[0]) for r in rows])
        return [OutboxRow(*r) for r in rows]

    async def settle_outbox(self, *, delivered: Iterable[tuple[int, float]] = (),
                            retry: Iterable[tuple[int, float, str]] = (),
                            dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                            recovered: Iterable[str] = (), now: float | None = None) -> None:
        await self._run(self._tx(self._settle_outbox), list(delivered), list(retry), list(dead),
                        list(release), list(recovered), now or time.time())

    def _settle_outbox(self, db: sqlite3.Connection, delivered: list[tuple[int, float]],
                       retry: list[tuple[int, float, str]], dead: list[tuple[int, str]], release: list[int],
                       recovered: list[str], now: float) -> None:
        counts: collections.Counter[str] = collections.Counter()
        cur = db.executemany("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                             "WHERE id = ? AND delivered_at IS NULL", [(at, id_) for id_, at in delivered])
        counts["outbox:delivered"] += max(cur.rowcount, 0)
        cur = db.executemany("UPDATE outbox SET dead = 1, attempts = attempts + 1, last_error = ? "
                             "WHERE id = ? AND dead = 0", [(error, id_) for id_, error in dead])
        counts["outbox:dead"] += max(cur.rowcount, 0)
        add_counts(db, counts)
        db.executemany("UPDATE outbox SET next_attempt = ? WHERE id = ?", [(now, id_) for id_ in release])
        db.executemany("UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?",
                       [(at, error, id_) for id_, at, error in retry])
        # The later events of a retrying key wait at least as long: they are not
        # due before it, so claims do not walk over them again and again.
        db.executemany("UPDATE outbox SET next_attempt = MAX(next_attempt, ?) WHERE delivered_at IS NULL "
                       "AND dead = 0 AND id > ? AND (account, order_key) = "
                       "(SELECT account, order_key FROM outbox WHERE id = ?)",
                       [(at, id_, id_) for id_, at, _ in retry])
        db.executemany("UPDATE outbox SET next_attempt = ? WHERE account = ? AND delivered_at IS NULL "
                       "AND dead = 0 AND attempts > 0 AND next_attempt > ?",
                       [(now, account, now) for account in recovered])

    async def settle_and_claim(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                               delivered: Iterable[tuple[int, float]] = (),
                               retry: Iterable[tuple[int, float, str]] = (),
                               dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                               recovered: Iterable[str] = (), now: float | None = None) -> list[OutboxRow]:
        return await self._run(self._tx(self._settle_and_claim), list(accounts), limit, lease_s, list(delivered),
                               list(retry), list(dead), list(release), list(recovered), now or time.time())

    def _settle_and_claim(self, db: sqlite3.Connection, accounts: list[str], limit: int, lease_s: float,
                          delivered: list[tuple[int, float]], retry: list[tuple[int, float, str]],
                          dead: list[tuple[int, str]], release: list[int], recovered: list[str],
                          now: float) -> list[OutboxRow]:
        self._settle_outbox(db, delivered, retry, dead, release, recovered, now)
        if limit <= 0 or not accounts:
            return []
        return self._claim_outbox(db, accounts, limit, lease_s, now)

    async def next_outbox_due(self, accounts: Iterable[str], now: float | None = None) -> float | None:
        accounts = list(accounts)
        if not accounts:
            return None
        rows = await self._read(self._select_dicts,
                               "SELECT MIN(next_attempt) AS due FROM outbox WHERE delivered_at IS NULL "
                               f"AND dead = 0 AND next_attempt > ? AND +account IN ({marks(len(accounts))})",
                               (now or time.time(), *accounts))
        due: float | None = rows[0]["due"]
        return due

    async def outbox_counts(self) -> dict[str, int]:
        # pending: by the partial index (what waits); delivered and dead: their counters.
        rows = await self._read(self._select_dicts,
                               "SELECT (SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead = 0) "
                               "AS pending, (SELECT COALESCE(SUM(n), 0) FROM counters WHERE name = "
                               "'outbox:delivered') AS delivered, (SELECT COALESCE(SUM(n), 0) FROM counters "
                               "WHERE name = 'outbox:dead') AS dead", ())
        return rows[0]

    async def dead_letters(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        columns = "id, account, kind, order_key, payload, created, attempts, last_error"
        if account is None:
            return await self._read(self._select_dicts, f"SELECT {columns} FROM outbox WHERE dead = 1 "
                                   "ORDER BY id LIMIT ?", (limit,))
        return await self._read(self._select_dicts, f"SELECT {columns} FROM outbox WHERE dead = 1 AND account = ? "
                               "ORDER BY id LIMIT ?", (account, limit))

    async def replay_dead(self, account: str | None = None, ids: Iterable[int] | None = None, *,
                          now: float | None = None) -> int:
        count: int = await self._run(self._tx(self._replay_dead), account, None if ids is None else list(ids),
                                     now or time.time())
        listener = self._recorder.listener
        if count and listener is not None:
            listener()
        return count

    def _replay_dead(self, db: sqlite3.Connection, account: str | None, ids: list[int] | None, now: float) -> int:
        where, args = "dead = 1", list[Any]()
        if account is not None:
            where += " AND account = ?"
            args.append(account)
        if ids is not None:
            if not ids:
                return 0
            where += f" AND id IN ({marks(len(ids))})"
            args += ids
        cur = db.execute(f"UPDATE outbox SET dead = 0, attempts = 0, created = ?, next_attempt = ? WHERE {where}",
                         (now, now, *args))
        add_counts(db, collections.Counter({"outbox:dead": -max(cur.rowcount, 0)}))
        return cur.rowcount

    async def outbox(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if account is None:
            return await self._read(self._select_dicts, "SELECT id, account, kind, order_key, payload, "
                                   "delivered_at FROM outbox ORDER BY id LIMIT ?", (limit,))
        return await self._read(self._select_dicts, "SELECT id, account, kind, order_key, payload, delivered_at "
                               "FROM outbox WHERE account = ? ORDER BY id LIMIT ?", (account, limit))

    async def outbox_entries(self, account: str, *, undelivered: bool = True,
                             limit: int = 200) -> list[OutboxEntry]:
        where = "account = ?" + (" AND delivered_at IS NULL" if undelivered else "")
        rows = await self._read(self._select_rows,
                               "SELECT id, account, kind, order_key, payload, created, attempts, next_attempt, "
                               f"delivered_at, dead, last_error FROM outbox WHERE {where} ORDER BY id DESC LIMIT ?",
                               (account, limit))
        return [OutboxEntry(id=r[0], account=r[1], kind=r[2], order_key=r[3], payload=r[4], created=r[5],
                            attempts=r[6], next_attempt=r[7], delivered_at=r[8], dead=bool(r[9]), last_error=r[10])
                for r in rows]

    def _select_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()
