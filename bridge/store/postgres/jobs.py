"""The job queue on PostgreSQL (:class:`bridge.store.protocols.JobQueue`).

Claims take rows with ``FOR UPDATE SKIP LOCKED``: daemons claiming at once
never wait for each other and never share a job. Every state a job takes is
looked up in ``bridge.core.jobstates`` and written with a line of history, as
on SQLite. New or returned work NOTIFYs the account's name, so that the
daemon driving its devices claims at once.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Collection, Iterable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bridge.core import events
from bridge.core import jobstates as js
from bridge.store import shaping
from bridge.store.model import (
    Enqueued,
    EventOutcome,
    Job,
    NewJob,
    ledger_states,
    new_id_sms_apis,
    parse_job_id,
)
from bridge.store.postgres.base import JOBS_CHANNEL, PgBase, add_counts, sql
from bridge.store.postgres.recorder import Batch
from bridge.store.postgres.records import store_report
from bridge.store.schema import JOB_COLUMNS, event_key, job_counter
from bridge.store.shaping import job_from_row
from device_agents import protocol

log = logging.getLogger(__name__)

QUEUED_SQL = f"state = '{js.QUEUED}'"
DISPATCHED_SQL = f"state = '{js.DISPATCHED}'"
UNCONFIRMED_SQL = f"state = '{js.UNCONFIRMED}'"

# One round trip for the jobs, their counters and the NOTIFY (an initplan: evaluated only if a
# job was new). A job's first line of history is its ``created`` (see shaping.history_lines).
_INSERT = ("WITH ins AS (INSERT INTO jobs (account, id_sms_api, kind, phone_number, message, url, priority, due, "
           "expires, parts, encoding, report, created, updated, state, sealed, uid) "
           "SELECT $1, u.k, u.kind, u.num, u.msg, u.url, u.pri, u.due, u.exp, u.parts, u.enc, u.rep, "
           "$13::float8, $13::float8, $14::text, u.sealed, $18::text "
           "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], "
           "$8::float8[], $9::float8[], $10::bigint[], $11::text[], $12::bigint[], $17::bytea[]) "
           "AS u (k, kind, num, msg, url, pri, due, exp, parts, enc, rep, sealed) "
           "ON CONFLICT (account, id_sms_api) DO NOTHING RETURNING id, id_sms_api, priority), "
           "c AS (INSERT INTO counters (name, n) SELECT 'jobs:' || $14::text || ':' || priority::text, COUNT(*) "
           "FROM ins GROUP BY priority) "
           "SELECT id, id_sms_api, (SELECT pg_notify($15, $16)) IS NULL AS notified FROM ins")
_BY_KEY = f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = $1 AND id_sms_api = ANY($2::text[])"
_BY_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1::bigint[])"


async def notify_queue(conn: asyncpg.Connection, node: str, account: str) -> None:
    """Wake the other daemons driving the account's devices (at commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", JOBS_CHANNEL, f"{node}:{account}")


async def insert_jobs(conn: asyncpg.Connection, batch: Batch, account: str, jobs: list[NewJob],
                      uid: str) -> list[Enqueued]:
    """Insert a batch with one statement; one :class:`Enqueued` per job.

    A key that was there before is answered with the job stored under it. Should that job be gone by the
    time it is read (purged a moment before), or a generated key meet one already taken (astronomically
    rare), those jobs are inserted again (with a new generated key): nothing accepted is lost, also when
    the statement ran as its own transaction (:meth:`PgJobQueue.enqueue`). ``uid``: the store's
    incarnation (see :attr:`Job.job_id`)."""
    now = time.time()
    state = shaping.ENQUEUED_STATE
    keys, fresh = shaping.plan_jobs(jobs, now)
    ids: dict[str, int] = {}
    existing: dict[str, Job] = {}
    todo = list(fresh)
    for _ in range(3):
        cols: list[list[Any]] = [[] for _ in range(11)]
        for key in todo:
            new, due, expires = fresh[key]
            for col, value in zip(cols, (key, new.kind, new.phone_number, new.message, new.url, new.priority, due,
                                         expires, new.parts, new.encoding, int(new.report)), strict=True):
                col.append(value)
        sealed = [fresh[key][0].sealed for key in todo]
        rows = await conn.fetch(_INSERT, account, *cols, now, state, JOBS_CHANNEL,
                                f"{batch.recorder.node}:{account}", sealed, uid) if todo else []
        ids.update((r["id_sms_api"], r["id"]) for r in rows)
        # Keys that were there before (sent again, or by another daemon a moment ago).
        taken = [k for k in todo if k not in ids]
        if taken:
            existing.update((j.id_sms_api, j) for j in map(job_from_row, await conn.fetch(_BY_KEY, account,
                                                                                               taken)))
        todo = []
        for key in taken:
            if not fresh[key][0].id_sms_api:  # a generated key met another job's: a new one
                again = new_id_sms_apis(1)[0]
                fresh[again] = fresh.pop(key)
                keys = [again if k == key else k for k in keys]
                existing.pop(key, None)
                todo.append(again)
            elif key not in existing:  # gone since the insert met it: insert it again
                todo.append(key)
        if not todo:
            break
    else:
        raise RuntimeError(f"id_sms_api {todo[0]!r} could not be stored; send again")
    created = {key: shaping.new_job(ids[key], account, key, planned, state, now, uid)
               for key, planned in fresh.items() if key in ids}
    if created:
        links = shaping.link_rows(account, fresh, created, now)
        if links:
            await conn.executemany("INSERT INTO links (code, account, job_id, id_sms_api, phone_number, url, "
                                   "created) VALUES ($1, $2, $3, $4, $5, $6, $7)", links)
        if batch.recorder.wants(account, events.STATE_EVENTS[state]):
            for job in created.values():
                batch.job_event(job, state, now, None, None)
        await batch.flush(conn)
    return shaping.enqueued(keys, created, existing)


async def jobs_by_id(conn: asyncpg.Connection, ids: list[int], *, lock: bool = False) -> dict[int, Job]:
    if not ids:
        return {}
    rows = await conn.fetch(_BY_ID + (" ORDER BY id FOR UPDATE" if lock else ""), ids)
    return {job.id: job for job in map(job_from_row, rows)}


class _Moves(shaping.Moves):
    """Job moves of one transaction (:class:`bridge.store.shaping.Moves`), written together by :meth:`flush`
    with their webhook events (gathered in ``batch``)."""
    __slots__ = ("batch",)

    def __init__(self, batch: Batch) -> None:
        super().__init__(batch.job_event)
        self.batch = batch

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.history:
            await conn.executemany("INSERT INTO job_history (job_id, state, at, device_id, reason) "
                                   "VALUES ($1, $2, $3, $4, $5)", self.history)
        if self.updates:
            await conn.executemany("UPDATE jobs SET state = $1, reason = $2, updated = $3, device_id = $4, "
                                   "dispatched_at = CASE WHEN $5 THEN NULL ELSE dispatched_at END, "
                                   "sealed = CASE WHEN $6 THEN NULL ELSE sealed END WHERE id = $7",
                                   list(self.updates.values()))
        await add_counts(conn, self.counts)
        await self.batch.flush(conn)
        for account in sorted(self.requeued):
            await notify_queue(conn, self.batch.recorder.node, account)
        self.clear()


def _claim_sql(avoid: bool) -> str:
    """The claim, with or without leaving sticky contacts to other devices
    (a contact another available device took last is left to it)."""
    others = (" AND NOT EXISTS (SELECT 1 FROM senders AS s WHERE s.account = jobs.account "
              "AND s.phone_number = jobs.phone_number AND s.device_id = ANY(?::text[]))") if avoid else ""
    return sql(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND {QUEUED_SQL} AND due <= ? AND expires > ? "
               f"AND kind = ANY(?::text[]) AND priority >= ?{others} "
               "ORDER BY priority DESC, due, id LIMIT ? FOR UPDATE SKIP LOCKED")


_CLAIM = _claim_sql(False)
_ENQUEUED = js.next_state(js.NEW, js.ENQUEUE)
_CLAIM_AVOIDING = _claim_sql(True)


class PgJobQueue(PgBase):
    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        if any(new.link_code for new in jobs) or self._recorder.wants(account, events.STATE_EVENTS[_ENQUEUED]):
            async with self._tx() as conn:
                out = await insert_jobs(conn, self._recorder.batch(), account, jobs, self.incarnation)
        else:
            # Nothing to write beside the one statement (jobs, history, counters, NOTIFY): it runs as its
            # own transaction, without BEGIN and COMMIT round trips (each a wake-up of both processes,
            # milliseconds on a busy machine). Durable as any commit (synchronous_commit as configured).
            async with self._read() as conn:
                out = await insert_jobs(conn, self._recorder.batch(), account, jobs, self.incarnation)
        self._queue_changed(account)
        return out

    async def claim(self, account: str, device_id: str, limit: int, *,
                    kinds: tuple[str, ...] = ("sms", "call"), max_parts: int | None = None,
                    avoid: Collection[str] = (), sticky: bool = False, min_priority: int = 0,
                    journal: str = "") -> list[Job]:
        if limit <= 0 or (max_parts is not None and max_parts <= 0):
            return []
        if max_parts is not None:
            limit = min(limit, max_parts)  # every job is at least one part
        now = time.time()
        async with self._tx() as conn:
            if avoid:
                rows = await conn.fetch(_CLAIM_AVOIDING, account, now, now, list(kinds), int(min_priority),
                                        list(avoid), limit)
            else:
                rows = await conn.fetch(_CLAIM, account, now, now, list(kinds), int(min_priority), limit)
            jobs = [job_from_row(r) for r in rows]
            if max_parts is not None:
                fitting = 0
                for i, job in enumerate(jobs):
                    fitting += job.parts
                    if fitting > max_parts:
                        jobs = jobs[:i]  # the rows left out are unlocked at commit, still queued
                        break
            if not jobs:
                return []
            target = js.next_state(js.QUEUED, js.DISPATCH)
            ids = [j.id for j in jobs]
            await conn.execute("UPDATE jobs SET state = $1, device_id = $2, dispatched_at = $3, "
                               "attempts = attempts + 1, updated = $3, journal = $5, link_lost = 0 "
                               "WHERE id = ANY($4::bigint[])", target, device_id, now, ids, journal)
            await conn.executemany("INSERT INTO job_history (job_id, state, at, device_id) VALUES ($1, $2, $3, $4)",
                                   [(i, target, now, device_id) for i in ids])
            deltas: collections.Counter[str] = collections.Counter()
            for j in jobs:
                deltas[job_counter(js.QUEUED, j.priority)] -= 1
                deltas[job_counter(target, j.priority)] += 1
            await add_counts(conn, deltas)
            if sticky:
                await conn.executemany(
                    "INSERT INTO senders (account, phone_number, device_id, at) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (account, phone_number) DO UPDATE SET device_id = excluded.device_id, "
                    "at = excluded.at", [(account, j.phone_number, device_id, now) for j in jobs])
            batch = self._recorder.batch()
            if self._recorder.wants(account, events.STATE_EVENTS[target]):
                for j in jobs:
                    batch.job_event(j, target, now, None, device_id)
            await batch.flush(conn)
            return jobs

    async def defer(self, device_id: str, job_ids: Collection[int], until: float, *, reason: str) -> int:
        if not job_ids:
            return 0
        now = time.time()
        async with self._tx() as conn:
            moves = _Moves(self._recorder.batch())
            moved = [job for job in (await jobs_by_id(conn, sorted(job_ids), lock=True)).values()
                     if job.device_id == device_id and job.state == js.DISPATCHED]
            for job in moved:
                moves.move(job, js.QUEUED, now, device_id=device_id, reason=reason)
            await moves.flush(conn)
            if moved:
                await conn.execute("UPDATE jobs SET due = $1, attempts = GREATEST(0, attempts - 1) "
                                   "WHERE id = ANY($2::bigint[])", until, [job.id for job in moved])
        return len(moved)

    async def next_due(self, account: str) -> float | None:
        async with self._read() as conn:
            due: float | None = await conn.fetchval(f"SELECT MIN(due) FROM jobs WHERE account = $1 AND {QUEUED_SQL}",
                                                    account)
            return due

    async def in_flight(self, device_id: str) -> list[Job]:
        async with self._read() as conn:
            rows = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = $1 AND {DISPATCHED_SQL} "
                                    "ORDER BY id", device_id)
        return [job_from_row(r) for r in rows]

    async def devices_in_flight(self) -> list[str]:
        async with self._read() as conn:
            rows = await conn.fetch(f"SELECT DISTINCT device_id FROM jobs WHERE {DISPATCHED_SQL} "
                                    "AND device_id IS NOT NULL")
        return [r[0] for r in rows]

    # -- what agents tell us -----------------------------------------------------------

    async def apply_events(self, device_id: str, account: str, events: Iterable[protocol.Event], *,
                           max_attempts: int = 5, journal: str = "") -> EventOutcome:
        events = list(events)
        now = time.time()
        acked = [ev.event_id for ev in events]
        async with self._tx() as conn:
            by_id: dict[str, protocol.Event] = {}  # keyed as in agent_events
            for ev in events:
                by_id.setdefault(event_key(journal, ev.event_id), ev)
            new_ids = {r[0] for r in await conn.fetch(
                "INSERT INTO agent_events (device_id, event_id, at) SELECT $1, e, $2 FROM unnest($3::text[]) AS e "
                "ON CONFLICT DO NOTHING RETURNING event_id", device_id, now, list(by_id))} if by_id else set()
            fresh = [ev for key, ev in by_id.items() if key in new_ids]
            jobs = await jobs_by_id(conn, [parsed[0] for ev in fresh if isinstance(ev, protocol.JobState)
                                           and (parsed := parse_job_id(ev.job_id)) is not None], lock=True)
            batch = self._recorder.batch()
            moves = _Moves(batch)
            finished = requeued = 0
            for ev in fresh:
                if isinstance(ev, protocol.JobState):
                    left, back = shaping.apply_job_report(device_id, ev, now, max_attempts, jobs, moves)
                    finished += left
                    requeued += back
                else:
                    await store_report(conn, batch, self._keywords, self._region, account, device_id, ev, now)
            await moves.flush(conn)
        if requeued:
            self._queue_changed(account)
        return EventOutcome(acked=acked, requeued=requeued, finished=finished)

    async def reconcile(self, device_id: str, journal: str,
                        ledger: Iterable[protocol.LedgerEntry]) -> list[Job]:
        known = ledger_states(ledger)
        now = time.time()
        async with self._tx() as conn:
            rows = await conn.fetch(f"SELECT {JOB_COLUMNS}, journal, link_lost FROM jobs WHERE device_id = $1 AND "
                                    f"({DISPATCHED_SQL} OR ({UNCONFIRMED_SQL} AND link_lost = 1)) "
                                    "ORDER BY id FOR UPDATE", device_id)
            moves = _Moves(self._recorder.batch())
            repush = shaping.reconcile_moves(device_id, journal, known,
                                             [(job_from_row(tuple(r)[:-2]), r["journal"]) for r in rows], now, moves)
            await moves.flush(conn)
            if rows:
                await conn.execute("UPDATE jobs SET link_lost = 0 WHERE id = ANY($1::bigint[])",
                                   [r["id"] for r in rows])
        return repush

    async def strand_device(self, device_id: str, dispatched_before: float, *, reason: str) -> int:
        now = time.time()
        async with self._tx() as conn:
            rows = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = $1 AND {DISPATCHED_SQL} "
                                    "AND dispatched_at < $2 ORDER BY id FOR UPDATE SKIP LOCKED",
                                    device_id, dispatched_before)
            moves = _Moves(self._recorder.batch())
            for row in rows:
                moves.move(job_from_row(row), js.UNCONFIRMED, now, device_id=device_id, reason=reason)
            await moves.flush(conn)
            if rows:
                await conn.execute("UPDATE jobs SET link_lost = 1 WHERE id = ANY($1::bigint[])",
                                   [r["id"] for r in rows])
        return len(rows)

    async def expire(self, now: float | None = None) -> int:
        now = now or time.time()
        async with self._tx() as conn:
            rows = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {QUEUED_SQL} AND expires <= $1 "
                                    "ORDER BY id LIMIT 10000 FOR UPDATE SKIP LOCKED", now)
            moves = _Moves(self._recorder.batch())
            for row in rows:
                job = job_from_row(row)
                moves.move(job, js.EXPIRED, now,
                           reason=f"not dispatched within its ttl ({job.expires - max(job.due, job.created):g} s)")
            await moves.flush(conn)
        return len(rows)

    async def next_expiry(self) -> float | None:
        async with self._read() as conn:
            expires: float | None = await conn.fetchval(f"SELECT MIN(expires) FROM jobs WHERE {QUEUED_SQL}")
            return expires

    # -- reading -----------------------------------------------------------------------

    async def get_job(self, account: str, id_sms_api: str) -> Job | None:
        async with self._read() as conn:
            row = await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = $1 AND id_sms_api = $2",
                                      account, id_sms_api)
        return job_from_row(row) if row else None

    async def history(self, job_id: int) -> list[dict[str, Any]]:
        async with self._read() as conn, conn.transaction(isolation="repeatable_read", readonly=True):  # one snapshot
            created = await conn.fetchval("SELECT created FROM jobs WHERE id = $1", job_id)
            rows = await conn.fetch("SELECT state, at, device_id, reason FROM job_history WHERE job_id = $1 "
                                    "ORDER BY seq", job_id)
        return shaping.history_lines(created, [dict(r) for r in rows])

    async def get_job_by_id(self, account: str, job_id: int) -> Job | None:
        async with self._read() as conn:
            row = await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = $1 AND id = $2",
                                      account, job_id)
        return job_from_row(row) if row else None

    async def cancel(self, account: str, id_sms_api: str, *, reason: str) -> Job | None:
        async with self._tx() as conn:
            row = await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = $1 AND id_sms_api = $2 "
                                      "FOR UPDATE", account, id_sms_api)
            if row is None:
                return None
            job = job_from_row(row)
            if job.state != js.QUEUED:
                return job  # on a device or done: the caller says why it stays
            moves = _Moves(self._recorder.batch())
            job = moves.move(job, js.next_state(js.QUEUED, "cancel"), time.time(), reason=reason)
            await moves.flush(conn)
            return job

    async def find_jobs(self, account: str | None, *, states: Iterable[str] = (), search: str = "",
                        limit: int = 100) -> list[Job]:
        states = tuple(states)
        search = search.strip()
        where: list[str] = []
        params: list[Any] = []
        if account is not None:
            where.append("account = ?")
            params.append(account)
        if states:
            where.append("state = ANY(?::text[])")
            params.append(list(states))
        if search:
            where.append("(id_sms_api = ? OR strpos(phone_number, ?) > 0)")
            params += (search, search)
        statement = f"SELECT {JOB_COLUMNS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        async with self._read() as conn:
            rows = await conn.fetch(sql(statement + " ORDER BY id DESC LIMIT ?"), *params, limit)
        return [job_from_row(r) for r in rows]

    async def sent_counts(self, since: float) -> dict[str, int]:
        async with self._read() as conn:
            rows = await conn.fetch("SELECT device_id, COUNT(*) FROM job_history WHERE state = $1 AND at >= $2 "
                                    "AND device_id IS NOT NULL GROUP BY device_id", js.SENT, since)
        return {r[0]: r[1] for r in rows}

    async def counts(self, account: str | None = None) -> dict[tuple[str, int], int]:
        if account is not None:
            rows = await self._fetch_dicts("SELECT state, priority, COUNT(*) AS n FROM jobs WHERE account = $1 "
                                           "GROUP BY state, priority", account)
            return {(r["state"], r["priority"]): r["n"] for r in rows}
        # The counters, folded or not: a few rows, not every job.
        rows = await self._fetch_dicts("SELECT name, SUM(n)::bigint AS n FROM counters WHERE name LIKE 'jobs:%' "
                                       "GROUP BY name")
        out: dict[tuple[str, int], int] = {}
        for r in rows:
            _, state, priority = r["name"].split(":")
            if r["n"]:
                out[(state, int(priority))] = r["n"]
        return out
