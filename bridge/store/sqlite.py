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
import dataclasses
import json
import logging
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bridge.core import jobstates as js
from bridge.core import numbers
from bridge.core.numbers import mask as mask_number
from bridge.core.optout import OPT_OUT, Keywords
from device_agents import protocol

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
    link_code: str | None = None  # tracked link in the text: {public_url}/l/{code} -> url


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


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One recorded webhook event, as the deliverer claims it."""
    id: int
    account: str
    kind: str
    order_key: str
    payload: str  # JSON text: the event's fields plus event_id, kind, account, at
    created: float
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """One address-book entry (upserted by account and number)."""
    phone_number: str
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    address: str = ""
    country_code: str = ""


@dataclass(frozen=True, slots=True)
class Link:
    """A tracked short link: ``{public_url}/l/{code}`` redirects to ``url``."""
    code: str
    account: str
    id_sms_api: str
    phone_number: str
    url: str
    created: float
    clicks: int


# Verification code states (stored); "dead" and "expired" are also derived.
CODE_PENDING = "pending"
CODE_VERIFIED = "verified"
CODE_DEAD = "dead"
CODE_EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class VerificationCode:
    id: int
    account: str
    phone_number: str
    salt: bytes
    digest: bytes
    created: float
    expires: float
    attempts: int
    max_attempts: int
    state: str
    verified_at: float | None
    id_sms_api: str | None
    sms_status: str | None  # the state of the SMS job that carried it

    def status(self, now: float) -> str:
        """``verified``, ``dead`` (no try left), ``expired`` or ``pending``."""
        if self.state == CODE_VERIFIED:
            return CODE_VERIFIED
        if self.state == CODE_DEAD or self.attempts >= self.max_attempts:
            return CODE_DEAD
        if now >= self.expires:
            return CODE_EXPIRED
        return CODE_PENDING


CODE_COLUMNS = ("c.id, c.account, c.phone_number, c.salt, c.digest, c.created, c.expires, c.attempts, "
                "c.max_attempts, c.state, c.verified_at, c.id_sms_api, j.state")
CODE_FROM = "verification_codes AS c LEFT JOIN jobs AS j ON j.account = c.account AND j.id_sms_api = c.id_sms_api"


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
    async def devices_in_flight(self) -> list[str]:
        """Devices that hold dispatched jobs (configured or not any more)."""

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

    # -- the API's records: opt-outs, contacts, links, notes, messages, codes --

    @abc.abstractmethod
    def set_opt_out(self, keywords: Keywords, default_region: str | None = None) -> None:
        """The stop/start words that incoming SMS are matched against, and the
        region that reads senders written without a country code."""

    @abc.abstractmethod
    async def opted_out(self, account: str, numbers: Iterable[str]) -> set[str]:
        """Those of ``numbers`` (E.164) that asked the account to stop."""

    @abc.abstractmethod
    async def upsert_contacts(self, account: str, contacts: list[Contact]) -> list[bool]:
        """Create or update by number; True for each contact that is new."""

    @abc.abstractmethod
    async def contacts(self, account: str, limit: int = 1000) -> list[Contact]: ...

    @abc.abstractmethod
    async def click(self, code: str, *, user_agent: str | None = None, ip: str | None = None) -> Link | None:
        """Record a click on a tracked link and raise its ``link_clicked``
        event; None for an unknown code."""

    @abc.abstractmethod
    async def links(self, account: str, id_sms_api: str) -> list[Link]: ...

    @abc.abstractmethod
    async def add_call_note(self, account: str, number: str, text: str, *, source: str = "interface") -> int:
        """Record a call qualification and raise its ``call_qualification`` event."""

    @abc.abstractmethod
    async def messages(self, account: str, *, direction: str | None = None, status: str | None = None,
                       take: int = 50, skip: int = 0) -> list[dict[str, Any]]:
        """Outgoing SMS jobs (``direction`` "out") and inbound SMS ("in"),
        newest first."""

    @abc.abstractmethod
    async def get_inbound(self, account: str, inbound_id: int) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    async def create_code(self, account: str, number: str, *, salt: bytes, digest: bytes, ttl_s: float,
                          max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        """A verification code (hashed) and the SMS job that carries it."""

    @abc.abstractmethod
    async def live_code(self, account: str, number: str, code_id: int | None = None) -> VerificationCode | None:
        """The newest pending, unexpired code with tries left for ``number``."""

    @abc.abstractmethod
    async def use_code_try(self, code_id: int) -> VerificationCode | None:
        """Spend one try of a live code; None when it has none left (or is
        verified or expired). The try is spent before the comparison."""

    @abc.abstractmethod
    async def finish_code(self, code_id: int, *, verified: bool) -> bool:
        """After a try: ``verified`` marks it used (True if it was still
        pending); otherwise it dies when no try is left."""

    @abc.abstractmethod
    async def codes(self, account: str, *, code_id: int | None = None, take: int = 50,
                    skip: int = 0) -> list[VerificationCode]: ...

    # -- webhook delivery (bridge/webhooks.py) --

    @abc.abstractmethod
    def set_outbox_listener(self, callback: Callable[[], None] | None) -> None:
        """``callback()`` is called, from any thread, whenever an event is
        recorded in the outbox. It must be cheap and thread-safe."""

    @abc.abstractmethod
    async def claim_outbox(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                           now: float | None = None) -> list[OutboxRow]:
        """Up to ``limit`` due events of ``accounts``, oldest due first, each the
        first undelivered, live event of its (account, order_key): a later event
        of a key waits while an earlier one is in flight or retrying. Claimed
        events are leased: not due again for ``lease_s`` unless settled."""

    @abc.abstractmethod
    async def settle_outbox(self, *, delivered: Iterable[tuple[int, float]] = (),
                            retry: Iterable[tuple[int, float, str]] = (),
                            dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                            recovered: Iterable[str] = (), now: float | None = None) -> None:
        """Record delivery outcomes in one transaction: ``delivered`` (id, at);
        ``retry`` (id, next attempt, error), which also holds back the later
        events of its key; ``dead`` (id, error); ``release`` ids claimed but not
        attempted (due again now); ``recovered`` accounts whose receiver answers
        again (their retrying events are due now)."""

    @abc.abstractmethod
    async def next_outbox_due(self, accounts: Iterable[str], now: float | None = None) -> float | None:
        """The earliest future ``next_attempt`` among undelivered live events."""

    @abc.abstractmethod
    async def outbox_counts(self) -> dict[str, int]:
        """``pending``, ``delivered``, ``dead`` events in the outbox."""

    # -- operations: health and pairing (bridge/notify.py, ``simbridge pair``) --

    async def ping(self) -> None:
        """A trivial query: the store answers (the service watchdog asks)."""
        raise NotImplementedError

    async def add_device_token(self, device_id: str, digest: str) -> None:
        """Record a pairing token of ``device_id`` by its SHA-256 (hex)."""
        raise NotImplementedError

    async def revoke_device(self, device_id: str, *, bump_generation: bool) -> int:
        """Revoke every pairing token of the device (returns how many); with
        ``bump_generation`` its derived token changes too."""
        raise NotImplementedError

    async def device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        """The live pairing-token digests of a device, and its derived-token generation."""
        raise NotImplementedError


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
    # 2: the API's records: contacts, tracked links and their clicks, opt-outs,
    # verification codes (hashed)
    """
    CREATE TABLE contacts (
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        firstname TEXT NOT NULL DEFAULT '',
        lastname TEXT NOT NULL DEFAULT '',
        email TEXT NOT NULL DEFAULT '',
        address TEXT NOT NULL DEFAULT '',
        country_code TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (account, phone_number)
    );
    CREATE TABLE links (
        code TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        id_sms_api TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        url TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX links_message ON links (account, id_sms_api);
    CREATE TABLE clicks (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL,
        at REAL NOT NULL,
        user_agent TEXT,
        ip TEXT
    );
    CREATE INDEX clicks_code ON clicks (code);
    CREATE TABLE opt_outs (
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        at REAL NOT NULL,
        keyword TEXT NOT NULL,
        PRIMARY KEY (account, phone_number)
    ) WITHOUT ROWID;
    CREATE TABLE verification_codes (
        id INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        phone_number TEXT NOT NULL,
        salt BLOB NOT NULL,
        digest BLOB NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        verified_at REAL,
        id_sms_api TEXT
    );
    CREATE INDEX verification_codes_number ON verification_codes (account, phone_number, id);
    CREATE INDEX jobs_account_created ON jobs (account, created);
    CREATE INDEX inbound_sms_account_stored ON inbound_sms (account, stored_at);
    """,
    # 3: webhook delivery: the first undelivered event of each (account, order_key)
    # is found by index, so that claims stay cheap with a large backlog.
    """
    CREATE INDEX outbox_order ON outbox (account, order_key, id) WHERE delivered_at IS NULL AND dead = 0;
    """,
    # 4: pairing tokens (``simbridge pair``): only their SHA-256 is kept
    """
    CREATE TABLE device_tokens (
        digest TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        created REAL NOT NULL,
        revoked REAL
    ) WITHOUT ROWID;
    CREATE INDEX device_tokens_device ON device_tokens (device_id);
    """,
]


ENQUEUE_CHUNK = 500  # rows in one multi-row INSERT (14 parameters each; SQLite allows 32,766)
IN_CHUNK = 500  # values in one IN (...) list


@dataclass(slots=True)
class _Writes:
    """Job moves of one transaction, written together by :meth:`flush`."""
    history: list[tuple[Any, ...]] = field(default_factory=list)
    updates: dict[int, tuple[Any, ...]] = field(default_factory=dict)

    def flush(self, db: sqlite3.Connection) -> None:
        if self.history:
            db.executemany("INSERT INTO job_history (job_id, state, at, device_id, reason) VALUES (?, ?, ?, ?, ?)",
                           self.history)
        if self.updates:
            db.executemany("UPDATE jobs SET state = ?, reason = ?, updated = ?, device_id = ?, "
                           "dispatched_at = CASE WHEN ? THEN NULL ELSE dispatched_at END WHERE id = ?",
                           list(self.updates.values()))
        self.history.clear()
        self.updates.clear()


class _Tx:
    """A write, for :meth:`SqliteStore._run` to run in a (group) transaction."""
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._pending_lock = threading.Lock()
        self._drain_scheduled = False
        self._webhooks: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if isinstance(fn, _Tx):
            return await self._write(fn.fn, *args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _tx(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Mark ``fn(db, ...)`` as a write: :meth:`_run` runs it in a transaction."""
        return _Tx(fn)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Group commit: writes that arrive while the store thread is busy are
        run together, each under its own savepoint, and committed (one fsync)
        together. Each caller still gets all-or-nothing for its own write."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, args, future))
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            self._executor.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._drain_scheduled = False
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        db = self._db
        try:
            if db is None:
                raise RuntimeError("store is not open")
            db.execute("BEGIN IMMEDIATE")
            try:
                for fn, args, future in batch:
                    db.execute("SAVEPOINT write")
                    try:
                        result = fn(db, *args)
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        db.execute("ROLLBACK TO write")
                        db.execute("RELEASE write")
                        outcomes.append((future, None, exc))
                    else:
                        db.execute("RELEASE write")
                        outcomes.append((future, result, None))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except BaseException as exc:  # the commit itself failed: nobody's write happened
            outcomes = [(future, None, exc) for _, _, future in batch]
        for future, result, error in outcomes:
            loop.call_soon_threadsafe(_settle, future, result, error)

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
        if self._on_outbox is not None:
            # Still inside the transaction: the listener's own store calls queue
            # behind it on the store thread, so they see the event committed.
            self._on_outbox()

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
              reason: str | None = None, device_id: str | None = None,
              writes: _Writes | None = None) -> Job:
        """Take ``job`` to ``target`` through the state table, recording each
        step. With ``writes``, the rows are gathered there (and written by
        its ``flush``) instead of one statement each."""
        own = writes is None
        writes = writes or _Writes()
        state = job.state
        for event in js.path(state, target):
            state = js.next_state(state, event)
            writes.history.append((job.id, state, now, device_id, reason))
            self._job_event(db, job, state, now, reason, device_id)
        assign = None if target == js.QUEUED else (device_id or job.device_id)
        writes.updates[job.id] = (target, reason, now, assign, target == js.QUEUED, job.id)
        if own:
            writes.flush(db)
        return dataclasses.replace(job, state=target, reason=reason, device_id=assign, updated=now)

    # -- jobs ------------------------------------------------------------------

    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        return await self._run(self._tx(self._enqueue), account, jobs)

    def _enqueue(self, db: sqlite3.Connection, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        """Insert a batch with a few multi-row statements (a per-row INSERT
        costs more than everything else of a 1,000-message request)."""
        now = time.time()
        given = [new.id_sms_api for new in jobs if new.id_sms_api]
        existing = {job.id_sms_api: job for job in self._jobs_by_key(db, account, given)}
        keys: list[str] = []
        fresh: dict[str, tuple[NewJob, float, float]] = {}
        for new in jobs:
            key = new.id_sms_api or new_id_sms_api()
            keys.append(key)
            if key in existing or key in fresh:
                continue  # sent before, or twice in this batch: the first one stands
            due = new.due if new.due is not None else now
            fresh[key] = (new, due, max(due, now) + new.ttl_s)  # a date in the past means: now
        created: dict[str, Job] = {}
        items = list(fresh.items())
        for i in range(0, len(items), ENQUEUE_CHUNK):
            chunk = items[i:i + ENQUEUE_CHUNK]
            values = []
            for key, (new, due, expires) in chunk:
                values += (account, key, new.kind, new.phone_number, new.message, new.url, new.priority, due,
                           expires, new.parts, new.encoding, int(new.report), now, now)
            rows = db.execute(
                "INSERT INTO jobs (account, id_sms_api, kind, phone_number, message, url, priority, due, expires, "
                "parts, encoding, report, created, updated, state) VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')"] * len(chunk))
                + " ON CONFLICT (account, id_sms_api) DO NOTHING RETURNING id, id_sms_api", values).fetchall()
            ids = dict((k, i) for i, k in rows)
            for key, (new, due, expires) in chunk:
                if key not in ids:  # a generated key that already existed: astronomically rare
                    raise sqlite3.IntegrityError(f"id_sms_api {key!r} collided; send again")
                created[key] = Job(ids[key], account, key, new.kind, new.phone_number, new.message, new.url,
                                   new.priority, due, expires, js.QUEUED, None, None, 0, new.parts, new.encoding,
                                   new.report, now, now)
        db.executemany("INSERT INTO job_history (job_id, state, at) VALUES (?, 'queued', ?)",
                       [(job.id, now) for job in created.values()])
        links = [(fresh[k][0].link_code, account, job.id, k, job.phone_number, job.url, now)
                 for k, job in created.items() if fresh[k][0].link_code and job.url]
        if links:
            db.executemany("INSERT INTO links (code, account, job_id, id_sms_api, phone_number, url, created) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", links)
        if self._wants(account, SMS_QUEUED):
            for job in created.values():
                self._job_event(db, job, js.QUEUED, now, None, None)
        out: list[Enqueued] = []
        first: set[str] = set()
        for key in keys:
            if key in created and key not in first:
                first.add(key)
                out.append(Enqueued(created[key], True))
            else:
                out.append(Enqueued(created.get(key) or existing[key], False))
        return out

    def _jobs_by_key(self, db: sqlite3.Connection, account: str, keys: list[str]) -> list[Job]:
        out: list[Job] = []
        for i in range(0, len(keys), IN_CHUNK):
            chunk = keys[i:i + IN_CHUNK]
            out += [_job(r) for r in db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE account = ? AND id_sms_api IN ({','.join('?' * len(chunk))})",
                (account, *chunk))]
        return out

    def _jobs_by_id(self, db: sqlite3.Connection, ids: list[int]) -> dict[int, Job]:
        out: dict[int, Job] = {}
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i:i + IN_CHUNK]
            for r in db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                job = _job(r)
                out[job.id] = job
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

    async def devices_in_flight(self) -> list[str]:
        return await self._run(lambda: [r[0] for r in self._db.execute(
            "SELECT DISTINCT device_id FROM jobs WHERE state = 'dispatched' AND device_id IS NOT NULL")])

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
        outcome = EventOutcome(acked=[ev.event_id for ev in events])
        seen = self._seen_events(db, device_id, outcome.acked)
        fresh = []
        for ev in events:
            if ev.event_id not in seen:  # seen before: the agent did not get our ack
                seen.add(ev.event_id)
                fresh.append(ev)
        db.executemany("INSERT INTO agent_events (device_id, event_id, at) VALUES (?, ?, ?)",
                       [(device_id, ev.event_id, now) for ev in fresh])
        jobs = self._jobs_by_id(db, [int(ev.job_id) for ev in fresh
                                     if isinstance(ev, protocol.JobState) and ev.job_id.isdigit()])
        writes = _Writes()
        for ev in fresh:
            if isinstance(ev, protocol.JobState):
                self._job_state(db, device_id, ev, now, max_attempts, outcome, jobs, writes)
            elif isinstance(ev, protocol.SmsReceived):
                db.execute("INSERT INTO inbound_sms (account, device_id, sender, text, received_at, stored_at, "
                           "sim, incomplete) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (account, device_id, ev.sender, ev.text, ev.at, now, ev.sim, int(ev.incomplete)))
                self._event(db, account, SMS_RECEIVED, f"in:{device_id}",
                            {"from": ev.sender, "message": ev.text, "date": ev.at, "device_id": device_id,
                             "incomplete": ev.incomplete}, now)
                self._opt_keyword(db, account, ev.sender, ev.text, now)
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
        writes.flush(db)
        return outcome

    def _seen_events(self, db: sqlite3.Connection, device_id: str, event_ids: list[str]) -> set[str]:
        seen: set[str] = set()
        for i in range(0, len(event_ids), IN_CHUNK):
            chunk = event_ids[i:i + IN_CHUNK]
            seen.update(r[0] for r in db.execute(
                f"SELECT event_id FROM agent_events WHERE device_id = ? AND event_id IN ({','.join('?' * len(chunk))})",
                (device_id, *chunk)))
        return seen

    def _job_state(self, db: sqlite3.Connection, device_id: str, ev: protocol.JobState, now: float,
                   max_attempts: int, outcome: EventOutcome, jobs: dict[int, Job], writes: _Writes) -> None:
        job = jobs.get(int(ev.job_id)) if ev.job_id.isdigit() else None
        if job is None:
            log.warning("device %s reported unknown job %r", device_id, ev.job_id)
            return
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
                jobs[job.id] = self._move(db, job, js.FAILED, now, device_id=device_id, writes=writes,
                                          reason=f"rejected {job.attempts} times; last: {ev.reason or 'no reason'}")
            else:
                jobs[job.id] = self._move(db, job, js.QUEUED, now, device_id=device_id, writes=writes,
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
        jobs[job.id] = self._move(db, job, target, now, reason=ev.reason, device_id=device_id, writes=writes)

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

    # -- the API's records: opt-outs, contacts, links, notes, messages, codes -----

    _keywords: Keywords = Keywords()
    _region: str | None = None

    def set_opt_out(self, keywords: Keywords, default_region: str | None = None) -> None:
        self._keywords = keywords
        self._region = default_region

    def _opt_keyword(self, db: sqlite3.Connection, account: str, sender: str, text: str, now: float) -> None:
        """An incoming SMS that is a stop (start) word opts its sender out (in)."""
        action = self._keywords.classify(text)
        if action is None:
            return
        number = numbers.normalise_or_keep(sender, self._region)
        if action == OPT_OUT:
            db.execute("INSERT INTO opt_outs (account, phone_number, at, keyword) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (account, phone_number) DO UPDATE SET at = excluded.at, "
                       "keyword = excluded.keyword", (account, number, now, text.strip()[:64]))
        else:
            db.execute("DELETE FROM opt_outs WHERE account = ? AND phone_number = ?", (account, number))
        log.info("account %s: %s opted %s", account, mask_number(number), "out" if action == OPT_OUT else "in")

    async def opted_out(self, account: str, numbers: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(numbers))
        if not wanted:
            return set()
        return await self._run(self._opted_out, account, wanted)

    def _opted_out(self, account: str, wanted: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows = self._db.execute(f"SELECT phone_number FROM opt_outs WHERE account = ? AND phone_number "
                                    f"IN ({','.join('?' * len(chunk))})", (account, *chunk)).fetchall()
            found.update(r[0] for r in rows)
        return found

    async def upsert_contacts(self, account: str, contacts: list[Contact]) -> list[bool]:
        return await self._run(self._tx(self._upsert_contacts), account, contacts)

    def _upsert_contacts(self, db: sqlite3.Connection, account: str, contacts: list[Contact]) -> list[bool]:
        now = time.time()
        created = []
        for c in contacts:
            cur = db.execute(
                "INSERT INTO contacts (account, phone_number, firstname, lastname, email, address, country_code, "
                "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, phone_number) DO NOTHING",
                (account, c.phone_number, c.firstname, c.lastname, c.email, c.address, c.country_code, now, now))
            if cur.rowcount == 1:
                created.append(True)
                continue
            # An update keeps what the request leaves out (an empty field).
            db.execute("UPDATE contacts SET firstname = COALESCE(NULLIF(?, ''), firstname), "
                       "lastname = COALESCE(NULLIF(?, ''), lastname), email = COALESCE(NULLIF(?, ''), email), "
                       "address = COALESCE(NULLIF(?, ''), address), "
                       "country_code = COALESCE(NULLIF(?, ''), country_code), updated = ? "
                       "WHERE account = ? AND phone_number = ?",
                       (c.firstname, c.lastname, c.email, c.address, c.country_code, now, account, c.phone_number))
            created.append(False)
        return created

    async def contacts(self, account: str, limit: int = 1000) -> list[Contact]:
        rows = await self._run(self._select_dicts,
                               "SELECT phone_number, firstname, lastname, email, address, country_code "
                               "FROM contacts WHERE account = ? ORDER BY created, phone_number LIMIT ?",
                               (account, limit))
        return [Contact(**r) for r in rows]

    async def click(self, code: str, *, user_agent: str | None = None, ip: str | None = None) -> Link | None:
        return await self._run(self._tx(self._click), code, user_agent, ip)

    def _click(self, db: sqlite3.Connection, code: str, user_agent: str | None, ip: str | None) -> Link | None:
        row = db.execute("SELECT code, account, id_sms_api, phone_number, url, created FROM links WHERE code = ?",
                         (code,)).fetchone()
        if row is None:
            return None
        now = time.time()
        db.execute("INSERT INTO clicks (code, at, user_agent, ip) VALUES (?, ?, ?, ?)",
                   (code, now, (user_agent or "")[:512] or None, ip))
        count = db.execute("SELECT COUNT(*) FROM clicks WHERE code = ?", (code,)).fetchone()[0]
        link = Link(*row, clicks=count)
        self._event(db, link.account, LINK_CLICKED, link.id_sms_api,
                    {"id_sms_api": link.id_sms_api, "phone_number": link.phone_number, "link": link.url,
                     "date": now, "code": code, "clicks": count}, now)
        return link

    async def links(self, account: str, id_sms_api: str) -> list[Link]:
        rows = await self._run(self._select_dicts,
                               "SELECT l.code, l.account, l.id_sms_api, l.phone_number, l.url, l.created, "
                               "(SELECT COUNT(*) FROM clicks AS k WHERE k.code = l.code) AS clicks "
                               "FROM links AS l WHERE l.account = ? AND l.id_sms_api = ? ORDER BY l.created",
                               (account, id_sms_api))
        return [Link(**r) for r in rows]

    async def add_call_note(self, account: str, number: str, text: str, *, source: str = "interface") -> int:
        return await self._run(self._tx(self._add_call_note), account, number, text, source)

    def _add_call_note(self, db: sqlite3.Connection, account: str, number: str, text: str, source: str) -> int:
        now = time.time()
        cur = db.execute("INSERT INTO call_notes (account, device_id, number, text, source, at) "
                         "VALUES (?, NULL, ?, ?, ?, ?)", (account, number, text, source, now))
        self._event(db, account, CALL_QUALIFICATION, f"note:{number}",
                    {"from": number, "qualification": text, "date": now, "source": source, "device_id": None},
                    now)
        return cur.lastrowid

    _OUT_SELECT = ("SELECT 'out' AS direction, j.id_sms_api AS id, j.id_sms_api, j.phone_number, j.message AS text, "
                   "j.state AS status, j.reason, j.created, j.due, j.updated, j.priority, j.parts, j.encoding, "
                   "j.device_id, j.attempts, (SELECT MIN(h.at) FROM job_history AS h WHERE h.job_id = j.id "
                   "AND h.state = 'sent') AS sent_at FROM jobs AS j WHERE j.account = ? AND j.kind = 'sms'")
    _IN_SELECT = ("SELECT 'in' AS direction, 'in_' || i.id AS id, NULL AS id_sms_api, i.sender AS phone_number, "
                  "i.text, 'received' AS status, NULL AS reason, i.stored_at AS created, NULL AS due, "
                  "i.stored_at AS updated, NULL AS priority, NULL AS parts, NULL AS encoding, i.device_id, "
                  "NULL AS attempts, NULL AS sent_at, i.received_at, i.incomplete FROM inbound_sms AS i "
                  "WHERE i.account = ?")

    async def messages(self, account: str, *, direction: str | None = None, status: str | None = None,
                       take: int = 50, skip: int = 0) -> list[dict[str, Any]]:
        return await self._run(self._messages, account, direction, status, take, skip)

    def _messages(self, account: str, direction: str | None, status: str | None, take: int,
                  skip: int) -> list[dict[str, Any]]:
        outgoing = direction in (None, "out") and status != "received"
        inbound = direction in (None, "in") and status in (None, "received")
        results: list[dict[str, Any]] = []
        if outgoing:
            sql, params = self._OUT_SELECT, (account,)
            if status:
                sql, params = sql + " AND j.state = ?", (account, status)
            results += self._select_dicts(sql + " ORDER BY j.created DESC, j.id DESC LIMIT ?",
                                          (*params, take + skip))
        if inbound:
            results += self._select_dicts(self._IN_SELECT + " ORDER BY i.stored_at DESC, i.id DESC LIMIT ?",
                                          (account, take + skip))
        if outgoing and inbound:
            results.sort(key=lambda r: r["created"], reverse=True)
        return results[skip:skip + take]

    async def get_inbound(self, account: str, inbound_id: int) -> dict[str, Any] | None:
        rows = await self._run(self._select_dicts, self._IN_SELECT + " AND i.id = ?", (account, inbound_id))
        return rows[0] if rows else None

    async def create_code(self, account: str, number: str, *, salt: bytes, digest: bytes, ttl_s: float,
                          max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        return await self._run(self._tx(self._create_code), account, number, salt, digest, ttl_s,
                               max_attempts, job)

    def _create_code(self, db: sqlite3.Connection, account: str, number: str, salt: bytes, digest: bytes,
                     ttl_s: float, max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        now = time.time()
        [enqueued] = self._enqueue(db, account, [job])
        cur = db.execute("INSERT INTO verification_codes (account, phone_number, salt, digest, created, expires, "
                         "max_attempts, id_sms_api) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (account, number, salt, digest, now, now + ttl_s, max_attempts, enqueued.job.id_sms_api))
        return self._code_by_id(db, cur.lastrowid), enqueued

    def _code_by_id(self, db: sqlite3.Connection, code_id: int) -> VerificationCode | None:
        row = db.execute(f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.id = ?", (code_id,)).fetchone()
        return VerificationCode(*row) if row else None

    async def live_code(self, account: str, number: str, code_id: int | None = None) -> VerificationCode | None:
        return await self._run(self._live_code, account, number, code_id)

    def _live_code(self, account: str, number: str, code_id: int | None) -> VerificationCode | None:
        sql = (f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.account = ? AND c.phone_number = ? "
               "AND c.state = 'pending' AND c.attempts < c.max_attempts AND c.expires > ?")
        params: tuple[Any, ...] = (account, number, time.time())
        if code_id is not None:
            sql, params = sql + " AND c.id = ?", (*params, code_id)
        row = self._db.execute(sql + " ORDER BY c.id DESC LIMIT 1", params).fetchone()
        return VerificationCode(*row) if row else None

    async def use_code_try(self, code_id: int) -> VerificationCode | None:
        return await self._run(self._tx(self._use_code_try), code_id)

    def _use_code_try(self, db: sqlite3.Connection, code_id: int) -> VerificationCode | None:
        cur = db.execute("UPDATE verification_codes SET attempts = attempts + 1 WHERE id = ? AND state = 'pending' "
                         "AND attempts < max_attempts AND expires > ?", (code_id, time.time()))
        return self._code_by_id(db, code_id) if cur.rowcount == 1 else None

    async def finish_code(self, code_id: int, *, verified: bool) -> bool:
        return await self._run(self._tx(self._finish_code), code_id, verified)

    def _finish_code(self, db: sqlite3.Connection, code_id: int, verified: bool) -> bool:
        if verified:
            cur = db.execute("UPDATE verification_codes SET state = 'verified', verified_at = ? "
                             "WHERE id = ? AND state = 'pending'", (time.time(), code_id))
            return cur.rowcount == 1
        db.execute("UPDATE verification_codes SET state = 'dead' WHERE id = ? AND state = 'pending' "
                   "AND attempts >= max_attempts", (code_id,))
        return False

    async def codes(self, account: str, *, code_id: int | None = None, take: int = 50,
                    skip: int = 0) -> list[VerificationCode]:
        return await self._run(self._codes, account, code_id, take, skip)

    def _codes(self, account: str, code_id: int | None, take: int, skip: int) -> list[VerificationCode]:
        sql, params = f"SELECT {CODE_COLUMNS} FROM {CODE_FROM} WHERE c.account = ?", (account,)
        if code_id is not None:
            sql, params = sql + " AND c.id = ?", (account, code_id)
        rows = self._db.execute(sql + " ORDER BY c.id DESC LIMIT ? OFFSET ?", (*params, take, skip)).fetchall()
        return [VerificationCode(*r) for r in rows]

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

    # -- webhook delivery --------------------------------------------------------

    _on_outbox: Callable[[], None] | None = None

    def set_outbox_listener(self, callback: Callable[[], None] | None) -> None:
        self._on_outbox = callback

    async def claim_outbox(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                           now: float | None = None) -> list[OutboxRow]:
        accounts = list(accounts)
        if limit <= 0 or not accounts:
            return []
        return await self._run(self._tx(self._claim_outbox), accounts, limit, lease_s, now or time.time())

    def _claim_outbox(self, db: sqlite3.Connection, accounts: list[str], limit: int, lease_s: float,
                      now: float) -> list[OutboxRow]:
        marks = ",".join("?" * len(accounts))
        rows = db.execute(
            "SELECT id, account, kind, order_key, payload, created, attempts FROM outbox AS o "
            # "+account": walk the due events in order (outbox_pending), not the whole account.
            f"WHERE delivered_at IS NULL AND dead = 0 AND next_attempt <= ? AND +account IN ({marks}) "
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
        db.executemany("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                       "WHERE id = ?", [(at, id_) for id_, at in delivered])
        db.executemany("UPDATE outbox SET dead = 1, attempts = attempts + 1, last_error = ? WHERE id = ?",
                       [(error, id_) for id_, error in dead])
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

    async def next_outbox_due(self, accounts: Iterable[str], now: float | None = None) -> float | None:
        accounts = list(accounts)
        if not accounts:
            return None
        marks = ",".join("?" * len(accounts))
        rows = await self._run(self._select_dicts,
                               "SELECT MIN(next_attempt) AS due FROM outbox WHERE delivered_at IS NULL "
                               f"AND dead = 0 AND next_attempt > ? AND +account IN ({marks})",
                               (now or time.time(), *accounts))
        return rows[0]["due"]

    async def outbox_counts(self) -> dict[str, int]:
        rows = await self._run(self._select_dicts,
                               "SELECT COUNT(*) FILTER (WHERE delivered_at IS NULL AND dead = 0) AS pending, "
                               "COUNT(delivered_at) AS delivered, COALESCE(SUM(dead), 0) AS dead FROM outbox", ())
        return rows[0]

    # -- operations: health and pairing ---------------------------------------------

    async def ping(self) -> None:
        await self._run(self._ping)

    def _ping(self) -> None:
        if self._db is None:
            raise RuntimeError("store is not open")
        self._db.execute("SELECT 1").fetchone()

    async def add_device_token(self, device_id: str, digest: str) -> None:
        await self._run(self._tx(self._add_device_token), device_id, digest)

    def _add_device_token(self, db: sqlite3.Connection, device_id: str, digest: str) -> None:
        db.execute("INSERT INTO device_tokens (digest, device_id, created) VALUES (?, ?, ?)",
                   (digest, device_id, time.time()))

    async def revoke_device(self, device_id: str, *, bump_generation: bool) -> int:
        return await self._run(self._tx(self._revoke_device), device_id, bump_generation)

    def _revoke_device(self, db: sqlite3.Connection, device_id: str, bump_generation: bool) -> int:
        cur = db.execute("UPDATE device_tokens SET revoked = ? WHERE device_id = ? AND revoked IS NULL",
                         (time.time(), device_id))
        if bump_generation:
            db.execute("INSERT INTO devices (id, token_generation) VALUES (?, 1) ON CONFLICT (id) "
                       "DO UPDATE SET token_generation = token_generation + 1", (device_id,))
        return cur.rowcount

    async def device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        return await self._run(self._device_auth, device_id)

    def _device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        rows = self._db.execute("SELECT digest FROM device_tokens WHERE device_id = ? AND revoked IS NULL",
                                (device_id,)).fetchall()
        gen = self._db.execute("SELECT token_generation FROM devices WHERE id = ?", (device_id,)).fetchone()
        return frozenset(r[0] for r in rows), gen[0] if gen else 0
