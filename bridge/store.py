"""The durable store: jobs and their history, inbound SMS, call events, the
webhook outbox. SQLite (WAL) here; the :class:`Store` interface is narrow so
that a PostgreSQL backend (claims with ``FOR UPDATE SKIP LOCKED``) can stand
in for it.

Every method is a coroutine; SQLite runs on one dedicated thread, never on
the event loop. Each method is one transaction: it happens whole or not at
all, so a crash at any point loses nothing that was answered as accepted.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import secrets
import sqlite3
import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from device_agents import protocol

from . import jobstates as js

log = logging.getLogger(__name__)
T = TypeVar("T")

ID_ALPHABET = string.ascii_letters + string.digits


def new_id_sms_api() -> str:
    """A 15-character identifier in the style of inSIM's (``FI5O7apqaaqcUmQ``)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(15))


# Webhook event kinds (the canonical names; the inSIM GET form is derived
# from them when they are delivered).
SMS_QUEUED = "sms_queued"
SMS_DISPATCHED = "sms_dispatched"
SMS_SENT = "sms_sent"
SMS_DELIVERED = "sms_delivered"
SMS_FAILED = "sms_failed"
SMS_RECEIVED = "sms_received"
CALL_INCOMING = "call_incoming"
CALL_OUTGOING = "call_outgoing"
CALL_MISSED = "call_missed"
LINK_CLICKED = "link_clicked"
CALL_QUALIFICATION = "call_qualification"
STATE_EVENTS = {js.QUEUED: SMS_QUEUED, js.DISPATCHED: SMS_DISPATCHED, js.SENT: SMS_SENT,
                js.DELIVERED: SMS_DELIVERED, js.FAILED: SMS_FAILED, js.EXPIRED: SMS_FAILED}
# What the inSIM GET form can carry; the JSON form carries everything.
INSIM_KINDS = frozenset({SMS_SENT, SMS_DELIVERED, SMS_FAILED, SMS_RECEIVED, CALL_INCOMING,
                         CALL_OUTGOING, CALL_MISSED, LINK_CLICKED, CALL_QUALIFICATION})


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    kind: str  # "sms" | "call"
    phone_number: str
    message: str = ""
    id_sms_api: str | None = None
    url: str | None = None
    priority: int = 1
    due: float | None = None  # epoch seconds; None = now
    ttl_s: float = 86400.0
    parts: int = 1
    encoding: str = "gsm7"
    report: bool = True


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    account: str
    id_sms_api: str
    kind: str
    phone_number: str
    message: str
    url: str | None
    priority: int
    due: float
    expires: float
    state: str
    reason: str | None
    device_id: str | None
    attempts: int
    parts: int
    encoding: str
    report: bool
    created: float
    updated: float

    @property
    def job_id(self) -> str:
        return str(self.id)

    def to_protocol(self) -> protocol.Job:
        if self.kind == "call":
            return protocol.Dial(job_id=self.job_id, to=self.phone_number)
        return protocol.SendSms(job_id=self.job_id, to=self.phone_number, text=self.message,
                                report=self.report, reference=self.id_sms_api)


JOB_COLUMNS = ("id, account, id_sms_api, kind, phone_number, message, url, priority, due, expires, "
               "state, reason, device_id, attempts, parts, encoding, report, created, updated")


def _job(row: tuple[Any, ...]) -> Job:
    values = list(row)
    values[16] = bool(values[16])
    return Job(*values)


@dataclass(frozen=True, slots=True)
class Enqueued:
    job: Job
    created: bool  # False: an earlier job with the same id_sms_api was returned


@dataclass(slots=True)
class EventOutcome:
    """What applying a batch of agent events did."""
    acked: list[str] = field(default_factory=list)  # event ids stored (or seen before)
    requeued: int = 0  # rejected jobs that went back to the queue
    finished: int = 0  # jobs that left the device's window (sent, failed, rejected)


class Store(abc.ABC):
    """What the daemon needs from a store. Every method is one transaction."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def set_webhooks(self, formats: dict[str, str]) -> None:
        """Accounts that have a webhook, and its format ("insim" | "json")."""

    @abc.abstractmethod
    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]: ...

    @abc.abstractmethod
    async def claim(self, account: str, device_id: str, limit: int, *,
                    kinds: tuple[str, ...] = ("sms", "call")) -> list[Job]: ...

    @abc.abstractmethod
    async def next_due(self, account: str) -> float | None: ...

    @abc.abstractmethod
    async def apply_events(self, device_id: str, account: str,
                           events: Iterable[protocol.Event], *, max_attempts: int) -> EventOutcome: ...

    @abc.abstractmethod
    async def reconcile(self, device_id: str, ledger: Iterable[protocol.LedgerEntry]) -> list[Job]: ...

    @abc.abstractmethod
    async def requeue_device(self, device_id: str, dispatched_before: float, *, reason: str,
                             max_attempts: int) -> int: ...

    @abc.abstractmethod
    async def in_flight(self, device_id: str) -> list[Job]: ...

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> int: ...

    @abc.abstractmethod
    async def get_job(self, account: str, id_sms_api: str) -> Job | None: ...

    @abc.abstractmethod
    async def history(self, job_id: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def counts(self) -> dict[tuple[str, int], int]: ...

    @abc.abstractmethod
    async def inbound(self, account: str, limit: int = 100) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def calls(self, account: str, limit: int = 100) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def outbox(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...


# ----------------------------------------------------------------------------
# SQLite


MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        id_sms_api TEXT NOT NULL,
        kind TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        url TEXT,
        priority INTEGER NOT NULL,
        due REAL NOT NULL,
        expires REAL NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        device_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        parts INTEGER NOT NULL DEFAULT 1,
        encoding TEXT NOT NULL DEFAULT 'gsm7',
        report INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        dispatched_at REAL,
        UNIQUE (account, id_sms_api)
    );
    CREATE INDEX jobs_queue ON jobs (account, priority DESC, due, id) WHERE state = 'queued';
    CREATE INDEX jobs_expiry ON jobs (expires) WHERE state = 'queued';
    CREATE INDEX jobs_on_device ON jobs (device_id, dispatched_at) WHERE state = 'dispatched';
    CREATE INDEX jobs_account_state ON jobs (account, state);
    CREATE TABLE job_history (
        job_id INTEGER NOT NULL,
        state TEXT NOT NULL,
        at REAL NOT NULL,
        device_id TEXT,
        reason TEXT
    );
    CREATE INDEX job_history_job ON job_history (job_id);
    CREATE TABLE inbound_sms (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        device_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        stored_at REAL NOT NULL,
        sim INTEGER,
        incomplete INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX inbound_sms_account ON inbound_sms (account, id);
    CREATE TABLE call_events (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        device_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        number TEXT NOT NULL,
        started_at REAL NOT NULL,
        duration_s REAL NOT NULL,
        job_id INTEGER,
        stored_at REAL NOT NULL
    );
    CREATE INDEX call_events_account ON call_events (account, id);
    CREATE TABLE call_notes (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        device_id TEXT,
        number TEXT NOT NULL,
        text TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        kind TEXT NOT NULL,
        order_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        next_attempt REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        dead INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_pending ON outbox (next_attempt, id) WHERE delivered_at IS NULL AND dead = 0;
    CREATE TABLE agent_events (
        device_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (device_id, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        token_generation INTEGER NOT NULL DEFAULT 0,
        last_seen REAL,
        last_status TEXT
    );
    """,
]


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._webhooks: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _tx(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Wrap ``fn(db, ...)`` in one transaction (on the store thread)."""
        def run(*args: Any) -> T:
            db = self._db
            if db is None:
                raise RuntimeError("store is not open")
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db, *args)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result
        return run

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute("PRAGMA cache_size = -65536")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            db.close()
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this "
                               f"simbridge knows ({len(MIGRATIONS)}); upgrade simbridge")
        for number in range(version, len(MIGRATIONS)):
            # One script, one transaction: the schema and its version move together.
            try:
                db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[number]}\n"
                                 f"PRAGMA user_version = {number + 1};\nCOMMIT;")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.close()
                raise
            log.info("store %s migrated to schema %d", self.path, number + 1)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    def set_webhooks(self, formats: dict[str, str]) -> None:
        self._webhooks = dict(formats)

    # -- outbox helpers (run inside a transaction) -----------------------------

    def _wants(self, account: str, kind: str) -> bool:
        fmt = self._webhooks.get(account)
        if fmt is None:
            return False
        return fmt == "json" or kind in INSIM_KINDS

    def _event(self, db: sqlite3.Connection, account: str, kind: str, order_key: str,
               payload: dict[str, Any], now: float) -> None:
        if not self._wants(account, kind):
            return
        cur = db.execute(
            "INSERT INTO outbox (account, kind, order_key, payload, created, next_attempt) "
            "VALUES (?, ?, ?, '', ?, ?)", (account, kind, order_key, now, now))
        body = dict(payload, event_id=f"evt_{cur.lastrowid}", kind=kind, account=account, at=now)
        db.execute("UPDATE outbox SET payload = ? WHERE id = ?",
                   (json.dumps(body, ensure_ascii=False), cur.lastrowid))

    def _job_event(self, db: sqlite3.Connection, job: Job, state: str, now: float,
                   reason: str | None, device_id: str | None) -> None:
        kind = STATE_EVENTS.get(state)
        if kind is None or job.kind != "sms":
            return
        payload = {"id_sms_api": job.id_sms_api, "phone_number": job.phone_number,
                   "state": state, "device_id": device_id, "parts": job.parts}
        if reason:
            payload["reason"] = reason
        self._event(db, job.account, kind, job.id_sms_api, payload, now)

    def _move(self, db: sqlite3.Connection, job: Job, target: str, now: float, *,
              reason: str | None = None, device_id: str | None = None) -> Job:
        """Take ``job`` to ``target`` through the state table, recording each step."""
        state = job.state
        for event in js.path(state, target):
            state = js.next_state(state, event)
            db.execute("INSERT INTO job_history (job_id, state, at, device_id, reason) VALUES (?, ?, ?, ?, ?)",
                       (job.id, state, now, device_id, reason))
            self._job_event(db, job, state, now, reason, device_id)
        assign = device_id if target != js.QUEUED else None
        db.execute("UPDATE jobs SET state = ?, reason = ?, updated = ?, device_id = COALESCE(?, device_id) "
                   "WHERE id = ?", (target, reason, now, assign, job.id))
        if target == js.QUEUED:
            db.execute("UPDATE jobs SET device_id = NULL, dispatched_at = NULL WHERE id = ?", (job.id,))
        return job

    # -- jobs ------------------------------------------------------------------

    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        return await self._run(self._tx(self._enqueue), account, jobs)

    def _enqueue(self, db: sqlite3.Connection, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        now = time.time()
        out: list[Enqueued] = []
        insert = ("INSERT INTO jobs (account, id_sms_api, kind, phone_number, message, url, priority, due, "
                  "expires, state, attempts, parts, encoding, report, created, updated) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (account, id_sms_api) DO NOTHING")
        history = []
        events = self._wants(account, SMS_QUEUED)
        for new in jobs:
            id_sms_api = new.id_sms_api or new_id_sms_api()
            due = new.due if new.due is not None else now
            expires = max(due, now) + new.ttl_s  # a date in the past means: now
            cur = db.execute(insert, (account, id_sms_api, new.kind, new.phone_number, new.message, new.url,
                                      new.priority, due, expires, new.parts, new.encoding,
                                      int(new.report), now, now))
            if cur.rowcount == 1:
                job = Job(cur.lastrowid, account, id_sms_api, new.kind, new.phone_number, new.message,
                          new.url, new.priority, due, expires, js.QUEUED, None, None, 0,
                          new.parts, new.encoding, new.report, now, now)
                history.append((job.id, js.QUEUED, now))
                if events:
                    self._job_event(db, job, js.QUEUED, now, None, None)
                out.append(Enqueued(job, True))
            else:
                row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id_sms_api = ?",
                                 (account, id_sms_api)).fetchone()
                out.append(Enqueued(_job(row), False))
        db.executemany("INSERT INTO job_history (job_id, state, at) VALUES (?, ?, ?)", history)
        return out

    async def claim(self, account: str, device_id: str, limit: int, *,
                    kinds: tuple[str, ...] = ("sms", "call")) -> list[Job]:
        if limit <= 0:
            return []
        return await self._run(self._tx(self._claim), account, device_id, limit, kinds)

    def _claim(self, db: sqlite3.Connection, account: str, device_id: str, limit: int,
               kinds: tuple[str, ...]) -> list[Job]:
        now = time.time()
        rows = db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND state = 'queued' AND due <= ? "
            f"AND expires > ? AND kind IN ({','.join('?' * len(kinds))}) "
            "ORDER BY priority DESC, due, id LIMIT ?", (account, now, now, *kinds, limit)).fetchall()
        jobs = [_job(r) for r in rows]
        if not jobs:
            return []
        db.executemany("UPDATE jobs SET state = 'dispatched', device_id = ?, dispatched_at = ?, "
                       "attempts = attempts + 1, updated = ? WHERE id = ?",
                       [(device_id, now, now, j.id) for j in jobs])
        db.executemany("INSERT INTO job_history (job_id, state, at, device_id) VALUES (?, 'dispatched', ?, ?)",
                       [(j.id, now, device_id) for j in jobs])
        if self._wants(account, SMS_DISPATCHED):
            for j in jobs:
                self._job_event(db, j, js.DISPATCHED, now, None, device_id)
        return jobs

    async def next_due(self, account: str) -> float | None:
        return await self._run(self._next_due, account)

    def _next_due(self, account: str) -> float | None:
        row = self._db.execute("SELECT MIN(due) FROM jobs WHERE account = ? AND state = 'queued'",
                               (account,)).fetchone()
        return row[0]

    async def in_flight(self, device_id: str) -> list[Job]:
        return await self._run(self._in_flight, device_id)

    def _in_flight(self, device_id: str) -> list[Job]:
        rows = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = ? AND state = 'dispatched' "
                                "ORDER BY id", (device_id,)).fetchall()
        return [_job(r) for r in rows]

    # -- what agents tell us -----------------------------------------------------

    async def apply_events(self, device_id: str, account: str, events: Iterable[protocol.Event], *,
                           max_attempts: int = 5) -> EventOutcome:
        return await self._run(self._tx(self._apply_events), device_id, account, list(events), max_attempts)

    def _apply_events(self, db: sqlite3.Connection, device_id: str, account: str,
                      events: list[protocol.Event], max_attempts: int) -> EventOutcome:
        now = time.time()
        outcome = EventOutcome()
        for ev in events:
            outcome.acked.append(ev.event_id)
            cur = db.execute("INSERT OR IGNORE INTO agent_events (device_id, event_id, at) VALUES (?, ?, ?)",
                             (device_id, ev.event_id, now))
            if cur.rowcount == 0:
                continue  # seen before: the agent did not get our ack
            if isinstance(ev, protocol.JobState):
                self._job_state(db, device_id, ev, now, max_attempts, outcome)
            elif isinstance(ev, protocol.SmsReceived):
                db.execute("INSERT INTO inbound_sms (account, device_id, sender, text, received_at, stored_at, "
                           "sim, incomplete) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (account, device_id, ev.sender, ev.text, ev.at, now, ev.sim, int(ev.incomplete)))
                self._event(db, account, SMS_RECEIVED, f"in:{device_id}",
                            {"from": ev.sender, "message": ev.text, "date": ev.at, "device_id": device_id,
                             "incomplete": ev.incomplete}, now)
            elif isinstance(ev, protocol.CallEvent):
                job_id = int(ev.job_id) if ev.job_id and ev.job_id.isdigit() else None
                db.execute("INSERT INTO call_events (account, device_id, direction, number, started_at, "
                           "duration_s, job_id, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (account, device_id, ev.direction, ev.number, ev.at, ev.duration_s, job_id, now))
                self._event(db, account, f"call_{ev.direction}", f"call:{device_id}",
                            {"phone_number": ev.number, "call_time": ev.at, "duration_s": ev.duration_s,
                             "direction": ev.direction, "device_id": device_id}, now)
            elif isinstance(ev, protocol.CallNote):
                db.execute("INSERT INTO call_notes (account, device_id, number, text, source, at) "
                           "VALUES (?, ?, ?, ?, 'mobile', ?)", (account, device_id, ev.number, ev.text, ev.at))
                self._event(db, account, CALL_QUALIFICATION, f"note:{ev.number}",
                            {"from": ev.number, "qualification": ev.text, "date": ev.at,
                             "source": "mobile", "device_id": device_id}, now)
        return outcome

    def _job_state(self, db: sqlite3.Connection, device_id: str, ev: protocol.JobState, now: float,
                   max_attempts: int, outcome: EventOutcome) -> None:
        if not ev.job_id.isdigit():
            log.warning("device %s reported unknown job %r", device_id, ev.job_id)
            return
        row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (int(ev.job_id),)).fetchone()
        if row is None:
            log.warning("device %s reported unknown job %s", device_id, ev.job_id)
            return
        job = _job(row)
        if job.device_id != device_id:
            # The job was given back to the queue and maybe to another device: this
            # device's word about it no longer counts.
            log.info("device %s reported job %s that is no longer its own", device_id, ev.job_id)
            return
        if ev.state == protocol.JOB_ACCEPTED:
            return
        if ev.state == protocol.JOB_REJECTED:
            if job.state != js.DISPATCHED:
                return
            outcome.finished += 1
            if job.attempts >= max_attempts:
                self._move(db, job, js.FAILED, now, device_id=device_id,
                           reason=f"rejected {job.attempts} times; last: {ev.reason or 'no reason'}")
            else:
                self._move(db, job, js.QUEUED, now, device_id=device_id,
                           reason=f"rejected by device: {ev.reason or 'no reason'}")
                outcome.requeued += 1
            return
        target = {protocol.JOB_SENT: js.SENT, protocol.JOB_DELIVERED: js.DELIVERED,
                  protocol.JOB_FAILED: js.FAILED}[ev.state]
        try:
            js.path(job.state, target)
        except js.InvalidTransition:
            log.info("device %s: job %s is %s, ignoring %s", device_id, job.id, job.state, ev.state)
            return
        if job.state == js.DISPATCHED:
            outcome.finished += 1
        self._move(db, job, target, now, reason=ev.reason, device_id=device_id)

    async def reconcile(self, device_id: str, ledger: Iterable[protocol.LedgerEntry]) -> list[Job]:
        """Jobs dispatched to this device that its ledger does not know: the
        agent never got them, so they are pushed again (same job id)."""
        known = {e.job_id for e in ledger}
        jobs = await self.in_flight(device_id)
        return [j for j in jobs if j.job_id not in known]

    async def requeue_device(self, device_id: str, dispatched_before: float, *, reason: str,
                             max_attempts: int = 5) -> int:
        return await self._run(self._tx(self._requeue_device), device_id, dispatched_before, reason, max_attempts)

    def _requeue_device(self, db: sqlite3.Connection, device_id: str, before: float, reason: str,
                        max_attempts: int) -> int:
        now = time.time()
        rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = ? AND state = 'dispatched' "
                          "AND dispatched_at < ?", (device_id, before)).fetchall()
        for row in rows:
            job = _job(row)
            if job.attempts >= max_attempts:
                self._move(db, job, js.FAILED, now, device_id=device_id,
                           reason=f"{reason}; gave up after {job.attempts} attempts")
            else:
                self._move(db, job, js.QUEUED, now, device_id=device_id, reason=reason)
        return len(rows)

    async def expire(self, now: float | None = None) -> int:
        return await self._run(self._tx(self._expire), now or time.time())

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND expires <= ? LIMIT 10000",
                          (now,)).fetchall()
        for row in rows:
            job = _job(row)
            self._move(db, job, js.EXPIRED, now,
                       reason=f"not dispatched within its ttl ({job.expires - max(job.due, job.created):g} s)")
        return len(rows)

    # -- reading -----------------------------------------------------------------

    async def get_job(self, account: str, id_sms_api: str) -> Job | None:
        return await self._run(self._get_job, account, id_sms_api)

    def _get_job(self, account: str, id_sms_api: str) -> Job | None:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id_sms_api = ?",
                               (account, id_sms_api)).fetchone()
        return _job(row) if row else None

    async def history(self, job_id: int) -> list[dict[str, Any]]:
        return await self._run(self._history, job_id)

    def _history(self, job_id: int) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT state, at, device_id, reason FROM job_history WHERE job_id = ? "
                                "ORDER BY rowid", (job_id,)).fetchall()
        return [{"state": s, "at": a, "device_id": d, "reason": r} for s, a, d, r in rows]

    async def counts(self) -> dict[tuple[str, int], int]:
        return await self._run(self._counts)

    def _counts(self) -> dict[tuple[str, int], int]:
        rows = self._db.execute("SELECT state, priority, COUNT(*) FROM jobs GROUP BY state, priority").fetchall()
        return {(s, p): n for s, p, n in rows}

    async def inbound(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(self._select_dicts,
                               "SELECT id, device_id, sender, text, received_at, incomplete FROM inbound_sms "
                               "WHERE account = ? ORDER BY id DESC LIMIT ?", (account, limit))

    async def calls(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._run(self._select_dicts,
                               "SELECT id, device_id, direction, number, started_at, duration_s, job_id "
                               "FROM call_events WHERE account = ? ORDER BY id DESC LIMIT ?", (account, limit))

    async def outbox(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        if account is None:
            return await self._run(self._select_dicts, "SELECT id, account, kind, order_key, payload, "
                                   "delivered_at FROM outbox ORDER BY id LIMIT ?", (limit,))
        return await self._run(self._select_dicts, "SELECT id, account, kind, order_key, payload, delivered_at "
                               "FROM outbox WHERE account = ? ORDER BY id LIMIT ?", (account, limit))

    def _select_dicts(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
