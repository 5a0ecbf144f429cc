"""The SQLite engine every concern of the backend shares: one connection on
one dedicated thread (never the event loop), group commit of writes, the
schema's migrations at open.

Reads run on the store thread as they come. Writes (functions marked with
:meth:`SqliteBase._tx`) that arrive while the thread is busy are run together,
each under its own savepoint, and committed with one fsync: each caller still
gets all-or-nothing for its own write.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.optout import Keywords
from bridge.store.model import Job
from bridge.store.protocols import EventFilter
from bridge.store.schema import MIGRATIONS, SCHEMA_VERSION
from bridge.store.sqlite.recorder import EventRecorder

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_CHUNK = 500  # values in one IN (...) list


def marks(count: int) -> str:
    """``?, ?, ?`` for an IN list of ``count`` values."""
    return ",".join("?" * count)


def add_counts(db: sqlite3.Connection, deltas: collections.Counter[str]) -> None:
    """Append this transaction's counter deltas (folded later by ``fold_counters``)."""
    rows = [(name, n) for name, n in deltas.items() if n]
    if rows:
        db.executemany("INSERT INTO counters (name, n) VALUES (?, ?)", rows)


def job_from_row(row: tuple[Any, ...]) -> Job:
    values = list(row)
    values[16] = bool(values[16])
    return Job(*values)


class _Tx:
    """A write, for :meth:`SqliteBase._run` to run in a (group) transaction."""
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


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
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._pending_lock = threading.Lock()
        self._drain_scheduled = False
        # Shared by the concerns: webhook events are recorded by jobs and records alike,
        # and incoming SMS (stored with the agents' events) are matched against opt-out words.
        self._recorder = EventRecorder(event_filter)
        self._keywords = Keywords()
        self._region: str | None = None
        self._queue_listener: Callable[[str], None] | None = None

    def set_queue_listener(self, callback: Callable[[str], None] | None) -> None:
        self._queue_listener = callback

    def _queue_changed(self, account: str) -> None:
        listener = self._queue_listener
        if listener is not None:
            listener(account)

    @property
    def _conn(self) -> sqlite3.Connection:
        """The open connection (for functions run on the store thread)."""
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # -- running on the store thread ---------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if isinstance(fn, _Tx):
            return await self._write(fn.fn, *args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _tx(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Mark ``fn(db, ...)`` as a write: :meth:`_run` runs it in a transaction."""
        return _Tx(fn)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
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

    def _select_dicts(self, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        cur = self._conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- Lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA temp_store = MEMORY")
        # 8 MiB of page cache (was 64): appends and the queue's head stay cached, and
        # the daemon's memory stays flat as the tables grow (docs/benchmarks.md).
        db.execute("PRAGMA cache_size = -8192")
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
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(self._ping)

    def _ping(self) -> None:
        self._conn.execute("SELECT 1").fetchone()
