"""The SQLite engine every concern of the backend shares: one connection on
one dedicated thread (never the event loop), group commit of writes, the
schema's migrations at open.

Reads run on the store thread as they come, but for those of the hot paths
(:meth:`SqliteBase._read`: an accept's opt-out check, the dispatcher's and the
API's lookups), which run on a second, read-only connection on a thread of
their own: WAL lets them read the last commit while a group is being written,
so a one-message request does not wait behind the agents' events. Writes (functions marked with
:meth:`SqliteBase._tx`) that arrive while the thread is busy are run together,
each under its own savepoint (a write alone: its transaction), and committed
with one fsync: each caller still gets all-or-nothing for its own write.

Storage faults: a write the disk cannot take (full, read-only, I/O error) fails
its whole batch as :class:`~bridge.store.model.StoreUnavailable` (the API answers
503) and marks the store *unwritable* until a write succeeds again; ``ping``
then tries a small write, so the store notices by itself when space returns.
Before every batch, and at every ``ping``, the database's path is compared with
the file opened: a file deleted or replaced while open takes no more writes
(they would land in a file nobody can open again), and a copy of what it holds
is saved beside it at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.optout import Keywords
from bridge.store.model import StoreUnavailable
from bridge.store.protocols import EventFilter
from bridge.store.schema import MIGRATIONS, SCHEMA_VERSION
from bridge.store.sqlite.recorder import EventRecorder

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_CHUNK = 500  # values in one IN (...) list
RETRY_AFTER_S = 5.0  # what a refused client is told to wait while the store cannot write
# After the disk was full, it counts as writable again only with this much free: a
# page squeezed in (one small write passing) is not room for the traffic.
RECOVERY_FREE_BYTES = 1 << 20


def storage_fault(exc: BaseException, path: Path) -> str | None:
    """Why the disk refused ``exc`` (an SQLite error), or None when it is not a storage fault."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        return f"the disk holding {path} is full"
    if name.startswith(("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")):
        # SQLite does not say the errno: ask the file system the same question.
        refusal = _try_writing(path.parent)
        if refusal is not None and refusal.errno == errno.EROFS:
            return f"the file system holding {path} is read-only"
        if refusal is not None and refusal.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk holding {path} is full"
        if refusal is not None:
            return f"{path} cannot be written ({name}: {refusal.strerror or refusal})"
        return f"{path} cannot be written ({name}: {exc})"
    return None


def _try_writing(directory: Path) -> OSError | None:
    """The error writing a small file in ``directory`` gives, or None."""
    probe = directory / ".simbridge-write-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        return exc
    return None


def marks(count: int) -> str:
    """``?, ?, ?`` for an IN list of ``count`` values."""
    return ",".join("?" * count)


def add_counts(db: sqlite3.Connection, deltas: collections.Counter[str]) -> None:
    """Append this transaction's counter deltas (folded later by ``fold_counters``)."""
    rows = [(name, n) for name, n in deltas.items() if n]
    if rows:
        db.executemany("INSERT INTO counters (name, n) VALUES (?, ?)", rows)


class _Tx:
    """A write, for :meth:`SqliteBase._run` to run in a (group) transaction;
    ``urgent``: see :meth:`SqliteBase._drain`."""
    __slots__ = ("fn", "urgent")

    def __init__(self, fn: Callable[..., Any], urgent: bool = False) -> None:
        self.fn = fn
        self.urgent = urgent

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


_Pending = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", bool]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteBase:
    """The connection, its thread and the group commit; :class:`Lifecycle`."""

    def __init__(self, path: str | Path, *, event_filter: EventFilter, synchronous: str = "full") -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        # This opening's incarnation: new jobs carry it in their id (model.Job.job_id), so
        # that the ids a restored backup hands out again are new to every agent's ledger.
        self.incarnation = secrets.token_hex(6)
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # The reads of the hot paths (see the module's doc): a connection of their own, and its thread.
        self._reader: sqlite3.Connection | None = None
        self._reader_thread = 0  # its thread's ident
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read",
                                                 initializer=self._mark_reader_thread)
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._drain_scheduled = False
        self._urgent_waiting = False  # an urgent write is pending: the group being written yields to it
        self._writes = 0  # writes asked of the store thread (the upkeep folds counters only after some)
        # Shared by the concerns: webhook events are recorded by jobs and records alike,
        # and incoming SMS (stored with the agents' events) are matched against opt-out words.
        self._recorder = EventRecorder(event_filter)
        self._keywords = Keywords()
        self._region: str | None = None
        self._queue_listener: Callable[[str], None] | None = None
        # Accounts given urgent work (priority 2) since their last claim: that claim is urgent too.
        self._urgent_news: set[str] = set()
        # Storage faults (see the module's doc): why writes are refused now, or None.
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._unwritable: str | None = None  # the disk refused a write; cleared by the next that passes
        self._gone: str | None = None  # the file was deleted or replaced: for good (until a restart)
        self._rescued: Path | None = None  # where its content was saved
        self._rescue_again = 0.0  # (monotonic) when a failed rescue is tried again

    @property
    def fault(self) -> str | None:
        """Why the store takes no writes now, or None."""
        return self._gone or self._unwritable

    def set_queue_listener(self, callback: Callable[[str], None] | None) -> None:
        self._queue_listener = callback

    def _enqueued(self, account: str, urgent: bool) -> None:
        """Jobs were enqueued for ``account`` (``urgent``: one of priority 2): the listener is told,
        and the account's next claim is committed as urgent (see :meth:`_drain`)."""
        if urgent:
            self._urgent_news.add(account)
        self._queue_changed(account)

    def _queue_changed(self, account: str) -> None:
        listener = self._queue_listener
        if listener is not None:
            listener(account)

    @property
    def _conn(self) -> sqlite3.Connection:
        """The open connection (for functions run on the store thread; on the
        reader's thread, the read-only one)."""
        if threading.get_ident() == self._reader_thread:
            if self._reader is None:
                raise RuntimeError("store is not open")
            return self._reader
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    def _mark_reader_thread(self) -> None:
        self._reader_thread = threading.get_ident()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read ``fn(*args)`` (it uses :attr:`_conn`) on the read-only connection,
        in one snapshot: the last commit, whatever is being written meanwhile."""
        # A write on this connection (query_only) is a mistake of ours, not a disk's refusal.
        return await self._in_thread(self._read_executor, self._in_snapshot, fn, args, readonly_is_fault=False)

    def _in_snapshot(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        db = self._conn
        db.execute("BEGIN")
        try:
            return fn(*args)
        finally:
            db.execute("COMMIT")

    # -- running on the store thread ---------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if isinstance(fn, _Tx):
            return await self._write(fn.fn, *args, urgent=fn.urgent)
        return await self._in_thread(self._executor, fn, *args)

    async def _in_thread(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any,
                         readonly_is_fault: bool = True) -> T:
        """``fn(*args)`` on ``executor``'s thread; a refusal of the disk as :class:`StoreUnavailable`."""
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except sqlite3.Error as exc:
            readonly = getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY"
            cause = storage_fault(exc, self.path) if readonly_is_fault or not readonly else None
            if cause is None:
                raise
            raise StoreUnavailable(cause, retry_after=RETRY_AFTER_S) from exc

    def _tx(self, fn: Callable[..., T], *, urgent: bool = False) -> Callable[..., T]:
        """Mark ``fn(db, ...)`` as a write: :meth:`_run` runs it in a transaction
        (``urgent``: committed ahead of the writes waiting with it, see :meth:`_drain`)."""
        return _Tx(fn, urgent)

    async def _write(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writes += 1
        with self._pending_lock:
            self._pending.append((fn, args, future, urgent))
            self._urgent_waiting = self._urgent_waiting or urgent
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            self._executor.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the writes that waited while the thread was busy: together, in one
        transaction (one fsync for all). Urgent ones (a priority-2 message, its claim)
        first, in a transaction of their own, answered as soon as it is committed:
        a one-time code does not wait for the hundreds of agent events that came
        with it (one more fsync, for what is rare by nature)."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._drain_scheduled = False
            self._urgent_waiting = False
        urgent = [w for w in batch if w[3]]
        if urgent and len(urgent) < len(batch):
            self._commit_group(loop, urgent)
            batch = [w for w in batch if not w[3]]
        self._commit_group(loop, batch, yields=True)

    def _commit_group(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], *,
                      yields: bool = False) -> None:
        """Run ``batch`` in one transaction. ``yields``: an urgent write that arrives
        meanwhile does not wait for the rest of it: what has run is committed, and
        the rest goes back to the head of the queue, behind the urgent one."""
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        db = self._db
        rest: list[_Pending] = []
        try:
            if db is None:
                raise RuntimeError("store is not open")
            self._check_file(db)
            db.execute("BEGIN IMMEDIATE")
            # A write alone in its group has the transaction for its savepoint: two statements
            # fewer, each a wait for the interpreter lock when SQLite hands back (docs/benchmarks.md).
            alone = len(batch) == 1
            try:
                for i, (fn, args, future, _) in enumerate(batch):
                    if i and yields and self._urgent_waiting:
                        rest, batch = batch[i:], batch[:i]
                        break
                    if not alone:
                        db.execute("SAVEPOINT write")
                    try:
                        result = fn(db, *args)
                    except Exception as exc:  # noqa: BLE001 - handed to its caller
                        if isinstance(exc, sqlite3.Error) and storage_fault(exc, self.path):
                            raise  # the disk's refusal: SQLite may have undone the whole transaction
                        if alone:
                            db.execute("ROLLBACK")
                        else:
                            db.execute("ROLLBACK TO write")
                            db.execute("RELEASE write")
                        outcomes.append((future, None, exc))
                    else:
                        if not alone:
                            db.execute("RELEASE write")
                        outcomes.append((future, result, None))
                if db.in_transaction:  # not after a lone write undone
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except BaseException as exc:  # the commit itself failed: nobody's write happened
            refusal = self._refused(exc)
            outcomes = [(future, None, refusal) for _, _, future, _ in batch]
        else:
            self._writable_again()
        for future, result, error in outcomes:
            loop.call_soon_threadsafe(_settle, future, result, error)
        if rest:
            with self._pending_lock:
                self._pending[:0] = rest
                schedule = not self._drain_scheduled
                self._drain_scheduled = True
            if schedule:
                self._executor.submit(self._drain, loop)

    # -- storage faults (on the store thread) ------------------------------------------

    def _check_file(self, db: sqlite3.Connection) -> None:
        """Refuse to write into a database file deleted or replaced while open, or,
        after the disk was full, before it has room again."""
        if self._gone is None and self._identity is not None:
            try:
                st = os.stat(self.path)
                moved = (st.st_dev, st.st_ino) != self._identity
            except FileNotFoundError:
                moved = True
            except OSError:
                moved = False  # cannot tell (e.g. an I/O error): the write says the rest
            if moved:
                self._gone = f"the database file {self.path} was deleted or replaced while open; no writes taken"
                self._rescue(db)
        if self._gone is not None:
            if self._rescued is None and time.monotonic() >= self._rescue_again:
                self._rescue(db)
            raise StoreUnavailable(self._gone, retry_after=RETRY_AFTER_S)
        if self._unwritable is not None:
            try:
                fs = os.statvfs(self.path.parent)
                free = fs.f_bavail * fs.f_frsize
            except OSError:
                return
            if free < RECOVERY_FREE_BYTES:
                raise StoreUnavailable(f"{self._unwritable} ({free // 1024} KiB free)", retry_after=RETRY_AFTER_S)

    RESCUE_RETRY_S = 30.0

    def _rescue(self, db: sqlite3.Connection) -> None:
        """Save what the file no longer at the path holds (it is still open here) beside it."""
        cause = f"the database file {self.path} was deleted or replaced while open; no writes taken"
        rescue = self.path.with_name(f"{self.path.name}.rescued-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            target = sqlite3.connect(rescue)
            try:
                db.backup(target)
            finally:
                target.close()
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(OSError):
                rescue.unlink()
            self._rescue_again = time.monotonic() + self.RESCUE_RETRY_S
            self._gone = f"{cause} (its content could not be saved yet: {exc}; do not restart)"
            log.critical("store: %s; tried again every %g s", self._gone, self.RESCUE_RETRY_S)
        else:
            self._rescued = rescue
            self._gone = f"{cause}; its content was saved to {rescue}"
            log.critical("store: %s. Stop simbridge, move that copy to %s, start it again", self._gone,
                         self.path)

    def _refused(self, exc: BaseException) -> BaseException:
        """A failed batch's error for its callers: a storage fault as StoreUnavailable."""
        if isinstance(exc, StoreUnavailable):
            return exc
        cause = storage_fault(exc, self.path)
        if cause is None:
            return exc
        if self._unwritable is None:
            log.error("store: %s; writes refused until it can write again", cause)
        self._unwritable = cause
        return StoreUnavailable(cause, retry_after=RETRY_AFTER_S).with_traceback(exc.__traceback__)

    def _writable_again(self) -> None:
        if self._unwritable is not None:
            log.warning("store: writes pass again (%s before)", self._unwritable)
            self._unwritable = None

    def _select_dicts(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        cur = self._conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- Lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)
        await asyncio.get_running_loop().run_in_executor(self._read_executor, self._open_reader)

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        return db

    def _open_reader(self) -> None:
        reader = self._connect(4096)
        reader.execute("PRAGMA query_only = 1")  # a write here would be a mistake: refused
        self._reader = reader

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 8 MiB of page cache (was 64): appends and the queue's head stay cached, and
        # the daemon's memory stays flat as the tables grow (docs/benchmarks.md).
        db = self._connect(8192)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this "
                               f"simbridge knows ({SCHEMA_VERSION}); upgrade simbridge")
        for number in range(version, SCHEMA_VERSION):
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
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._db = db

    async def close(self) -> None:
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(self._read_executor, self._reader.close)
            self._reader = None
        self._read_executor.shutdown(wait=True)
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        """The store answers; :class:`StoreUnavailable` when it takes no writes
        (while the disk refused the last one, a small write is tried: passing,
        the store is writable again)."""
        await self._run(self._ping)

    def _ping(self) -> None:
        db = self._conn
        self._check_file(db)
        if self._unwritable is None:
            db.execute("SELECT 1").fetchone()
            return
        try:  # a real write: a frame appended to the WAL, and synced
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                db.execute(f"PRAGMA user_version = {int(version)}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._refused(exc) from exc
        self._writable_again()
