"""The job queue on SQLite (:class:`bridge.store.protocols.JobQueue`).

Every state a job takes is looked up in ``bridge.core.jobstates`` before it
is written, and written with a line of history; batches look the move up once
and write it with bulk statements (a per-row statement costs more than
everything else of a 1,000-message request). A new batch is planned (keys,
dates, statements and values) on the caller's thread, and its answers made
there once it is written (:class:`Planned`): the store thread only runs the
statements.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import operator
import sqlite3
import time
from collections.abc import Collection, Iterable
from typing import Any

from bridge.core import events
from bridge.core import jobstates as js
from bridge.store import shaping
from bridge.store.model import (
    URGENT,
    Enqueued,
    EventOutcome,
    Job,
    NewJob,
    ledger_states,
    parse_job_id,
)
from bridge.store.schema import JOB_COLUMNS, event_key, job_counter
from bridge.store.shaping import job_from_row
from bridge.store.sqlite.base import IN_CHUNK, SqliteBase, add_counts, marks
from bridge.store.sqlite.recorder import EventRecorder
from bridge.store.sqlite.records import store_report
from device_agents import protocol

log = logging.getLogger(__name__)

ENQUEUE_CHUNK = 1000  # rows in one multi-row INSERT (3 parameters each, or 10-12; SQLite allows 32,766)
# The largest rowid SQLite has: past it, it would pick new ids at random (https://sqlite.org/autoinc.html).
MAX_ROWID = 2**63 - 1
# The columns an enqueue writes: those the batch shares, bound once a statement (?1-?4: account,
# now, state, uid; ?5: the id before the chunk's first, each row's id written ``?5 + n``), then
# each job's own; the _ALIKE columns once a statement too when every job of the chunk has the
# same values there (most batches: binding holds the interpreter lock), else once a row; ``url``
# and ``sealed`` only in chunks where a job has one (a NULL parameter is adapted through
# sqlite3's protocol lookup: ~0.6 µs each, 0.04 for an int).
_SHARED = ("account", "created", "updated", "state", "uid")
_SHARED_MARKS = ("?1", "?2", "?2", "?3", "?4")
_TOP = 5  # ?5
_OWN = ("id_sms_api", "phone_number", "message")
_ALIKE = ("kind", "priority", "due", "expires", "parts", "encoding", "report")
_EXTRA = ("url", "sealed")
# What makes two jobs alike in the _ALIKE columns (their due and expires follow from due and ttl_s).
_alike_key = operator.attrgetter("kind", "priority", "due", "ttl_s", "parts", "encoding", "report")
_phone_of = operator.attrgetter("phone_number")
_text_of = operator.attrgetter("message")
_priority_of = operator.attrgetter("priority")
_link_of = operator.attrgetter("link_code")

# Literal states in SELECTs, so that SQLite can use the partial indexes (WHERE state = 'queued').
QUEUED_SQL = f"state = '{js.QUEUED}'"
DISPATCHED_SQL = f"state = '{js.DISPATCHED}'"
UNCONFIRMED_SQL = f"state = '{js.UNCONFIRMED}'"


# -- writing jobs (also used by the codes, whose SMS is enqueued with the code) --

def insert_jobs(db: sqlite3.Connection, recorder: EventRecorder, account: str, jobs: list[NewJob],
                uid: str) -> list[Enqueued]:
    """Insert a batch with a few multi-row statements; one :class:`Enqueued` per job.
    ``uid``: the store's incarnation (see :attr:`Job.job_id`).

    A job's first line of history (queued, at its creation) is not written: it is the job's own
    ``created`` (see :func:`bridge.store.shaping.history_lines`)."""
    now = time.time()
    state = shaping.ENQUEUED_STATE
    given = [new.id_sms_api for new in jobs if new.id_sms_api]
    existing = {job.id_sms_api: job for job in jobs_by_key(db, account, given)}
    keys, fresh = shaping.plan_jobs(jobs, now, existing)
    created: dict[str, Job] = {}
    todo = list(fresh)
    top = db.execute("SELECT MAX(id) FROM jobs").fetchone()[0] or 0  # kept by the write lock (BEGIN IMMEDIATE)
    while todo:
        taken: list[str] = []
        for i in range(0, len(todo), ENQUEUE_CHUNK):
            top = _insert_chunk(db, account, todo[i:i + ENQUEUE_CHUNK], fresh, state, now, uid, top, created, taken)
        # Only a generated key can be taken here (given ones were looked up first, and this is the
        # only writer): made in the same millisecond with the same 8 random characters
        # (model.new_id_sms_apis), about once in 10^8 pairs of 1,000-message batches. The message is
        # stored under a new key, never refused.
        todo = []
        for key, again in zip(taken, shaping.new_id_sms_apis(len(taken)), strict=True):
            fresh[again] = fresh.pop(key)
            keys = [again if k == key else k for k in keys]
            todo.append(again)
    by_priority = collections.Counter(job.priority for job in created.values())
    add_counts(db, collections.Counter({job_counter(state, priority): n for priority, n in by_priority.items()}))
    links = shaping.link_rows(account, fresh, created, now)
    if links:
        db.executemany("INSERT INTO links (code, account, job_id, id_sms_api, phone_number, url, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", links)
    if recorder.wants(account, events.STATE_EVENTS[state]):
        for job in created.values():
            recorder.job_event(db, job, state, now, None, None)
    return shaping.enqueued(keys, created, existing)


def _insert_chunk(db: sqlite3.Connection, account: str, chunk: list[str], fresh: shaping.Fresh, state: str,
                  now: float, uid: str, top: int, created: dict[str, Job], taken: list[str]) -> int:
    """Insert the jobs of ``chunk`` (keys of ``fresh``) in one statement: each one inserted goes
    into ``created``, a key already taken into ``taken``. ``top``: the largest id in the table; the
    answer: the largest after (or the limit, once SQLite chooses).

    The ids are given, the ones after ``top``: the transaction holds the write lock, so no one else
    takes them, and the statement needs no RETURNING (which cost a sixth of it)."""
    # Past SQLite's largest rowid (never in practice), NULL ids: SQLite's own choice, returned.
    own = top > MAX_ROWID - len(chunk)
    sql, values = _chunk_statement(account, chunk, fresh, state, now, uid, own=own)
    values[_TOP - 1] = top
    cursor = db.execute(sql, values)
    if own:
        ids = {key: job_id for job_id, key in cursor.fetchall()}
    else:
        ids = dict(zip(chunk, range(top + 1, top + len(chunk) + 1), strict=True))
        if cursor.rowcount != len(chunk):  # a key was taken: its id is not in the table
            there = {i for (i,) in db.execute("SELECT id FROM jobs WHERE id > ? AND id <= ?",
                                              (top, top + len(chunk)))}
            ids = {key: job_id for key, job_id in ids.items() if job_id in there}
    for key in chunk:
        made = ids.get(key)
        if made is None:
            taken.append(key)
        else:
            created[key] = shaping.new_job(made, account, key, fresh[key], state, now, uid)
    # A taken key's id is left unused. Once at the limit, SQLite chooses for the rest of the batch.
    return MAX_ROWID if own else top + len(chunk)


def _chunk_statement(account: str, chunk: list[str], fresh: shaping.Fresh, state: str, now: float, uid: str,
                     *, own: bool = False) -> tuple[str, list[Any]]:
    """The statement inserting the jobs of ``chunk`` (keys of ``fresh``, ids after ?5) and its
    values, ?5 left for the caller to set (None). ``own``: NULL ids, SQLite's own choice."""
    planned = [fresh[key] for key in chunk]
    news = [plan[0] for plan in planned]
    extra = any(new.url is not None or new.sealed is not None for new in news)
    alike = not extra and len(set(map(_alike_key, news))) == 1
    values: list[Any] = [account, now, state, uid, None]
    if alike:
        first, due, expires = planned[0]
        values += (first.kind, first.priority, due, expires, first.parts, first.encoding, int(first.report))
        values += itertools.chain.from_iterable(zip(chunk, map(_phone_of, news), map(_text_of, news), strict=True))
    else:
        for key, (new, due, expires) in zip(chunk, planned, strict=True):
            values += (key, new.phone_number, new.message, new.kind, new.priority, due, expires, new.parts,
                       new.encoding, int(new.report))
            if extra:
                values += (new.url, new.sealed)
    return _insert_sql(len(chunk), alike, extra, own), values


@functools.lru_cache(maxsize=32)
def _insert_sql(rows: int, alike: bool, extra: bool, own: bool) -> str:
    """The statement :func:`_chunk_statement` binds: the values the chunk shares first (?1-?5,
    then, ``alike``, its jobs' _ALIKE columns), then each row's."""
    columns = (*_SHARED, "id", *_OWN, *_ALIKE, *(_EXTRA if extra else ()))
    first = _TOP + 1
    alike_marks: list[str] = []
    if alike:
        alike_marks = [f"?{first + i}" for i in range(len(_ALIKE))]
        first += len(_ALIKE)
    width = len(_OWN) + (0 if alike else len(_ALIKE) + (len(_EXTRA) if extra else 0))
    rows_sql = []
    for r in range(rows):
        row = [*_SHARED_MARKS, "NULL" if own else f"?{_TOP} + {r + 1}",
               *(f"?{first + r * width + i}" for i in range(width)), *alike_marks]
        rows_sql.append("(" + ", ".join(row) + ")")
    return (f"INSERT INTO jobs ({', '.join(columns)}) VALUES {','.join(rows_sql)} "
            "ON CONFLICT (account, id_sms_api) DO NOTHING" + (" RETURNING id, id_sms_api" if own else ""))


def jobs_by_key(db: sqlite3.Connection, account: str, keys: list[str]) -> list[Job]:
    out: list[Job] = []
    for i in range(0, len(keys), IN_CHUNK):
        chunk = keys[i:i + IN_CHUNK]
        out += [job_from_row(r) for r in db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id_sms_api IN ({marks(len(chunk))})",
            (account, *chunk))]
    return out


def jobs_by_id(db: sqlite3.Connection, ids: list[int]) -> dict[int, Job]:
    out: dict[int, Job] = {}
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i:i + IN_CHUNK]
        for r in db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({marks(len(chunk))})", chunk):
            job = job_from_row(r)
            out[job.id] = job
    return out


class _Moves(shaping.Moves):
    """Job moves of one transaction (:class:`bridge.store.shaping.Moves`), written together by :meth:`flush`;
    their webhook events are recorded as they are taken."""
    __slots__ = ()

    def __init__(self, db: sqlite3.Connection, recorder: EventRecorder) -> None:
        super().__init__(functools.partial(recorder.job_event, db))

    def flush(self, db: sqlite3.Connection) -> None:
        if self.history:
            db.executemany("INSERT INTO job_history (job_id, state, at, device_id, reason) VALUES (?, ?, ?, ?, ?)",
                           self.history)
        if self.updates:
            db.executemany("UPDATE jobs SET state = ?, reason = ?, updated = ?, device_id = ?, "
                           "dispatched_at = CASE WHEN ? THEN NULL ELSE dispatched_at END, "
                           "sealed = CASE WHEN ? THEN NULL ELSE sealed END WHERE id = ?",
                           list(self.updates.values()))
        add_counts(db, self.counts)
        self.clear()


class Planned:
    """A batch planned before its transaction, on the event loop's thread: its keys (generated ones
    made), the jobs to insert under them, each chunk's statement and values (?5 set in the
    transaction), its counter deltas and link rows (the job id set there). What the store thread is
    then left with is its statements: SQLite's work runs without the interpreter lock, the Python
    around it does not, and two threads taking turns with the lock slowed them both (see
    :func:`insert_planned`; docs/benchmarks.md)."""
    __slots__ = ("now", "keys", "fresh", "given", "chunks", "counts", "links")

    def __init__(self, account: str, jobs: list[NewJob], uid: str) -> None:
        self.now = now = time.time()
        self.keys, self.fresh = shaping.plan_jobs(jobs, now)
        self.given = [new.id_sms_api for new in jobs if new.id_sms_api]
        state = shaping.ENQUEUED_STATE
        todo = list(self.fresh)
        self.chunks: list[tuple[int, str, list[Any]]] = []
        for i in range(0, len(todo), ENQUEUE_CHUNK):
            chunk = todo[i:i + ENQUEUE_CHUNK]
            self.chunks.append((len(chunk), *_chunk_statement(account, chunk, self.fresh, state, now, uid)))
        news = [plan[0] for plan in self.fresh.values()]  # the jobs inserted, in order
        by_priority = collections.Counter(map(_priority_of, news))
        self.counts = collections.Counter({job_counter(state, p): n for p, n in by_priority.items()})
        # (position among the jobs inserted, the row less its job id)
        self.links = [(n, (new.link_code, account, None, key, new.phone_number, new.url, now))
                      for n, (key, new) in enumerate(zip(self.fresh, news, strict=True)) if new.link_code and new.url] \
            if any(map(_link_of, news)) else []

    def made(self, account: str, top: int, uid: str) -> list[Enqueued]:
        """The answers, once inserted with the ids after ``top``."""
        state, now = shaping.ENQUEUED_STATE, self.now
        if len(self.fresh) == len(self.keys):  # each key asked for once (most batches)
            return shaping.made_in_order(account, self.fresh, top + 1, state, now, uid)
        created = {key: shaping.new_job(job_id, account, key, plan, state, now, uid)
                   for job_id, (key, plan) in enumerate(self.fresh.items(), top + 1)}
        return shaping.enqueued(self.keys, created, {})


def insert_planned(db: sqlite3.Connection, recorder: EventRecorder, account: str, jobs: list[NewJob],
                   planned: Planned, uid: str) -> int | list[Enqueued]:
    """Insert a :class:`Planned` batch as planned: the answer is the id before its first job (its
    jobs took the next ones, in order). Where the plan does not hold, the batch is inserted by
    :func:`insert_jobs` instead, and the answer is its: a key of the batch already stored (sent
    before), a generated key taken (see :func:`insert_jobs`), an account sent ``sms_queued``
    events (each made from its job, here), ids at the end of SQLite's range."""
    state = shaping.ENQUEUED_STATE
    if recorder.wants(account, events.STATE_EVENTS[state]):
        return insert_jobs(db, recorder, account, jobs, uid)
    if planned.given and jobs_by_key(db, account, planned.given):
        return insert_jobs(db, recorder, account, jobs, uid)
    top = db.execute("SELECT MAX(id) FROM jobs").fetchone()[0] or 0  # kept by the write lock (BEGIN IMMEDIATE)
    if top > MAX_ROWID - len(planned.fresh):
        return insert_jobs(db, recorder, account, jobs, uid)
    at = top
    for rows, sql, values in planned.chunks:
        values[_TOP - 1] = at
        if db.execute(sql, values).rowcount != rows:
            # A generated key taken: what this batch inserted is taken back (the ids after ``top``
            # are its own: the write lock is held) and the batch goes the long way.
            db.execute("DELETE FROM jobs WHERE id > ?", (top,))
            return insert_jobs(db, recorder, account, jobs, uid)
        at += rows
    add_counts(db, planned.counts)
    if planned.links:
        db.executemany("INSERT INTO links (code, account, job_id, id_sms_api, phone_number, url, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(*row[:2], top + 1 + n, *row[3:]) for n, row in planned.links])
    return top


class SqliteJobQueue(SqliteBase):
    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        urgent = any(new.priority >= URGENT for new in jobs)
        uid = self.incarnation
        planned = Planned(account, jobs, uid)
        out = await self._run(self._tx(insert_planned, urgent=urgent), self._recorder, account, jobs, planned, uid)
        self._enqueued(account, urgent)
        return out if isinstance(out, list) else planned.made(account, out, uid)

    async def claim(self, account: str, device_id: str, limit: int, *,
                    kinds: tuple[str, ...] = ("sms", "call"), max_parts: int | None = None,
                    avoid: Collection[str] = (), sticky: bool = False, min_priority: int = 0,
                    journal: str = "") -> list[Job]:
        if limit <= 0 or (max_parts is not None and max_parts <= 0):
            return []
        # Urgent when it asks for priority 2 only, or when such work came since the account's
        # last claim (the claims of one dispatch round are then committed together, ahead of
        # the agents' events). The news goes with this claim: it sees the queue's head.
        urgent = min_priority >= URGENT or account in self._urgent_news
        self._urgent_news.discard(account)
        return await self._run(self._tx(self._claim, urgent=urgent), account, device_id, limit, kinds,
                               max_parts, tuple(avoid), sticky, min_priority, journal)

    def _claim(self, db: sqlite3.Connection, account: str, device_id: str, limit: int, kinds: tuple[str, ...],
               max_parts: int | None, avoid: tuple[str, ...], sticky: bool, min_priority: int,
               journal: str) -> list[Job]:
        now = time.time()
        if max_parts is not None:
            limit = min(limit, max_parts)  # every job is at least one part
        others = f" AND priority >= {int(min_priority)}" if min_priority > 0 else ""
        if avoid:
            others += (" AND NOT EXISTS (SELECT 1 FROM senders AS s WHERE s.account = jobs.account "
                      f"AND s.phone_number = jobs.phone_number AND s.device_id IN ({marks(len(avoid))}))")
        rows = db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND {QUEUED_SQL} AND due <= ? "
            f"AND expires > ? AND kind IN ({marks(len(kinds))}){others} "
            "ORDER BY priority DESC, due, id LIMIT ?", (account, now, now, *kinds, *avoid, limit)).fetchall()
        jobs = [job_from_row(r) for r in rows]
        if max_parts is not None:
            fitting = 0
            for i, job in enumerate(jobs):
                fitting += job.parts
                if fitting > max_parts:
                    jobs = jobs[:i]
                    break
        if not jobs:
            return []
        target = js.next_state(js.QUEUED, js.DISPATCH)  # once for the batch: every row was queued
        db.executemany("UPDATE jobs SET state = ?, device_id = ?, dispatched_at = ?, "
                       "attempts = attempts + 1, updated = ?, journal = ?, link_lost = 0 WHERE id = ?",
                       [(target, device_id, now, now, journal, j.id) for j in jobs])
        db.executemany("INSERT INTO job_history (job_id, state, at, device_id) VALUES (?, ?, ?, ?)",
                       [(j.id, target, now, device_id) for j in jobs])
        if sticky:
            db.executemany("INSERT INTO senders (account, phone_number, device_id, at) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (account, phone_number) DO UPDATE SET device_id = excluded.device_id, "
                           "at = excluded.at", [(account, j.phone_number, device_id, now) for j in jobs])
        deltas: collections.Counter[str] = collections.Counter()
        for j in jobs:
            deltas[job_counter(js.QUEUED, j.priority)] -= 1
            deltas[job_counter(target, j.priority)] += 1
        add_counts(db, deltas)
        if self._recorder.wants(account, events.STATE_EVENTS[target]):
            for j in jobs:
                self._recorder.job_event(db, j, target, now, None, device_id)
        return jobs

    async def defer(self, device_id: str, job_ids: Collection[int], until: float, *, reason: str) -> int:
        if not job_ids:
            return 0
        return await self._run(self._tx(self._defer), device_id, list(job_ids), until, reason)

    def _defer(self, db: sqlite3.Connection, device_id: str, job_ids: list[int], until: float, reason: str) -> int:
        now = time.time()
        moves = _Moves(db, self._recorder)
        moved = [job for job in jobs_by_id(db, job_ids).values()
                 if job.device_id == device_id and job.state == js.DISPATCHED]
        for job in moved:
            moves.move(job, js.QUEUED, now, device_id=device_id, reason=reason)
        moves.flush(db)
        db.executemany("UPDATE jobs SET due = ?, attempts = MAX(0, attempts - 1) WHERE id = ?",
                       [(until, job.id) for job in moved])
        return len(moved)

    async def next_due(self, account: str) -> float | None:
        return await self._read(self._next_due, account)

    def _next_due(self, account: str) -> float | None:
        row = self._conn.execute(f"SELECT MIN(due) FROM jobs WHERE account = ? AND {QUEUED_SQL}",
                                 (account,)).fetchone()
        due: float | None = row[0]
        return due

    async def in_flight(self, device_id: str) -> list[Job]:
        return await self._read(self._in_flight, device_id)

    def _in_flight(self, device_id: str) -> list[Job]:
        rows = self._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = ? AND {DISPATCHED_SQL} "
                                  "ORDER BY id", (device_id,)).fetchall()
        return [job_from_row(r) for r in rows]

    async def devices_in_flight(self) -> list[str]:
        return await self._read(self._devices_in_flight)

    def _devices_in_flight(self) -> list[str]:
        return [r[0] for r in self._conn.execute(
            f"SELECT DISTINCT device_id FROM jobs WHERE {DISPATCHED_SQL} AND device_id IS NOT NULL")]

    # -- what agents tell us -----------------------------------------------------------

    async def apply_events(self, device_id: str, account: str, events: Iterable[protocol.Event], *,
                           max_attempts: int = 5, journal: str = "") -> EventOutcome:
        outcome = await self._run(self._tx(self._apply_events), device_id, account, list(events), max_attempts,
                                  journal)
        if outcome.requeued:
            self._queue_changed(account)
        return outcome

    def _apply_events(self, db: sqlite3.Connection, device_id: str, account: str,
                      events: list[protocol.Event], max_attempts: int, journal: str) -> EventOutcome:
        now = time.time()
        acked = [ev.event_id for ev in events]
        seen = self._seen_events(db, device_id, [event_key(journal, i) for i in acked])
        fresh = []
        for ev in events:
            key = event_key(journal, ev.event_id)
            if key not in seen:  # seen before: the agent did not get our ack
                seen.add(key)
                fresh.append(ev)
        db.executemany("INSERT INTO agent_events (device_id, event_id, at) VALUES (?, ?, ?)",
                       [(device_id, event_key(journal, ev.event_id), now) for ev in fresh])
        jobs = jobs_by_id(db, [parsed[0] for ev in fresh if isinstance(ev, protocol.JobState)
                               and (parsed := parse_job_id(ev.job_id)) is not None])
        moves = _Moves(db, self._recorder)
        finished = requeued = 0
        for ev in fresh:
            if isinstance(ev, protocol.JobState):
                left, back = shaping.apply_job_report(device_id, ev, now, max_attempts, jobs, moves)
                finished += left
                requeued += back
            else:
                store_report(db, self._recorder, self._keywords, self._region, account, device_id, ev, now)
        moves.flush(db)
        return EventOutcome(acked=acked, requeued=requeued, finished=finished)

    def _seen_events(self, db: sqlite3.Connection, device_id: str, event_ids: list[str]) -> set[str]:
        seen: set[str] = set()
        for i in range(0, len(event_ids), IN_CHUNK):
            chunk = event_ids[i:i + IN_CHUNK]
            seen.update(r[0] for r in db.execute(
                f"SELECT event_id FROM agent_events WHERE device_id = ? AND event_id IN ({marks(len(chunk))})",
                (device_id, *chunk)))
        return seen

    async def reconcile(self, device_id: str, journal: str,
                        ledger: Iterable[protocol.LedgerEntry]) -> list[Job]:
        return await self._run(self._tx(self._reconcile), device_id, journal, ledger_states(ledger))

    def _reconcile(self, db: sqlite3.Connection, device_id: str, journal: str, known: dict[str, str]) -> list[Job]:
        now = time.time()
        rows = db.execute(f"SELECT {JOB_COLUMNS}, journal, link_lost FROM jobs WHERE device_id = ? AND "
                          f"({DISPATCHED_SQL} OR ({UNCONFIRMED_SQL} AND link_lost = 1)) ORDER BY id",
                          (device_id,)).fetchall()
        moves = _Moves(db, self._recorder)
        repush = shaping.reconcile_moves(device_id, journal, known, [(job_from_row(r[:-2]), r[-2]) for r in rows],
                                         now, moves)
        moves.flush(db)
        db.executemany("UPDATE jobs SET link_lost = 0 WHERE id = ?", [(r[0],) for r in rows])
        return repush

    async def strand_device(self, device_id: str, dispatched_before: float, *, reason: str) -> int:
        return await self._run(self._tx(self._strand_device), device_id, dispatched_before, reason)

    def _strand_device(self, db: sqlite3.Connection, device_id: str, before: float, reason: str) -> int:
        now = time.time()
        rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = ? AND {DISPATCHED_SQL} "
                          "AND dispatched_at < ?", (device_id, before)).fetchall()
        moves = _Moves(db, self._recorder)
        for row in rows:
            moves.move(job_from_row(row), js.UNCONFIRMED, now, device_id=device_id, reason=reason)
        moves.flush(db)
        db.executemany("UPDATE jobs SET link_lost = 1 WHERE id = ?", [(r[0],) for r in rows])
        return len(rows)

    async def expire(self, now: float | None = None) -> int:
        return await self._run(self._tx(self._expire), now or time.time())

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {QUEUED_SQL} AND expires <= ? LIMIT 10000",
                          (now,)).fetchall()
        moves = _Moves(db, self._recorder)
        for row in rows:
            job = job_from_row(row)
            moves.move(job, js.EXPIRED, now,
                       reason=f"not dispatched within its ttl ({job.expires - max(job.due, job.created):g} s)")
        moves.flush(db)
        return len(rows)

    async def next_expiry(self) -> float | None:
        return await self._read(self._next_expiry)

    def _next_expiry(self) -> float | None:
        expires: float | None = self._conn.execute(f"SELECT MIN(expires) FROM jobs WHERE {QUEUED_SQL}").fetchone()[0]
        return expires

    # -- reading -----------------------------------------------------------------------

    async def get_job(self, account: str, id_sms_api: str) -> Job | None:
        return await self._read(self._get_job, account, id_sms_api)

    def _get_job(self, account: str, id_sms_api: str) -> Job | None:
        row = self._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id_sms_api = ?",
                                 (account, id_sms_api)).fetchone()
        return job_from_row(row) if row else None

    async def get_job_by_id(self, account: str, job_id: int) -> Job | None:
        return await self._read(self._get_job_by_id, account, job_id)

    def _get_job_by_id(self, account: str, job_id: int) -> Job | None:
        row = self._conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id = ?",
                                 (account, job_id)).fetchone()
        return job_from_row(row) if row else None

    async def history(self, job_id: int) -> list[dict[str, Any]]:
        return await self._read(self._history, job_id)

    def _history(self, job_id: int) -> list[dict[str, Any]]:
        db = self._conn
        created = db.execute("SELECT created FROM jobs WHERE id = ?", (job_id,)).fetchone()
        rows = db.execute("SELECT state, at, device_id, reason FROM job_history WHERE job_id = ? ORDER BY rowid",
                          (job_id,)).fetchall()
        return shaping.history_lines(created[0] if created else None,
                                     [{"state": s, "at": a, "device_id": d, "reason": r} for s, a, d, r in rows])

    async def cancel(self, account: str, id_sms_api: str, *, reason: str) -> Job | None:
        return await self._run(self._tx(self._cancel), account, id_sms_api, reason)

    def _cancel(self, db: sqlite3.Connection, account: str, id_sms_api: str, reason: str) -> Job | None:
        row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id_sms_api = ?",
                         (account, id_sms_api)).fetchone()
        if row is None:
            return None
        job = job_from_row(row)
        if job.state != js.QUEUED:
            return job  # on a device or done: the caller says why it stays
        moves = _Moves(db, self._recorder)
        job = moves.move(job, js.next_state(js.QUEUED, "cancel"), time.time(), reason=reason)
        moves.flush(db)
        return job

    async def find_jobs(self, account: str | None, *, states: Iterable[str] = (), search: str = "",
                        limit: int = 100) -> list[Job]:
        return await self._read(self._find_jobs, account, tuple(states), search.strip(), limit)

    def _find_jobs(self, account: str | None, states: tuple[str, ...], search: str, limit: int) -> list[Job]:
        where: list[str] = []
        params: list[Any] = []
        if account is not None:
            where.append("account = ?")
            params.append(account)
        if states:
            where.append(f"state IN ({marks(len(states))})")
            params += states
        if search:
            where.append("(id_sms_api = ? OR instr(phone_number, ?) > 0)")
            params += (search, search)
        sql = f"SELECT {JOB_COLUMNS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [job_from_row(r) for r in rows]

    async def sent_counts(self, since: float) -> dict[str, int]:
        return await self._read(self._sent_counts, since)

    def _sent_counts(self, since: float) -> dict[str, int]:
        rows = self._conn.execute("SELECT device_id, COUNT(*) FROM job_history WHERE state = ? AND at >= ? "
                                  "AND device_id IS NOT NULL GROUP BY device_id", (js.SENT, since)).fetchall()
        return {d: n for d, n in rows}

    async def counts(self, account: str | None = None) -> dict[tuple[str, int], int]:
        return await self._read(self._counts, account)

    def _counts(self, account: str | None) -> dict[tuple[str, int], int]:
        if account is None:  # the counters, folded or not: a few rows, not every job
            out: dict[tuple[str, int], int] = {}
            for name, n in self._conn.execute("SELECT name, SUM(n) FROM counters WHERE name LIKE 'jobs:%' "
                                              "GROUP BY name").fetchall():
                _, state, priority = name.split(":")
                if n:
                    out[(state, int(priority))] = n
            return out
        rows = self._conn.execute("SELECT state, priority, COUNT(*) FROM jobs WHERE account = ? "
                                  "GROUP BY state, priority", (account,))
        return {(s, p): n for s, p, n in rows.fetchall()}
