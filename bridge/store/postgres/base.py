"""The PostgreSQL engine every concern of the backend shares: a pool of
asyncpg connections, each coroutine one transaction, the schema's migrations
at open under an advisory lock (two daemons starting together do not race),
and a listening connection that turns other daemons' NOTIFY into wake-ups.

Statements are written with SQLite's ``?`` placeholders, as the SQLite
backend's are, and numbered (``$1``…) by :func:`sql` once, at import.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bridge.core.optout import Keywords
from bridge.store.model import StoreUnavailable
from bridge.store.postgres.recorder import OUTBOX_CHANNEL, EventRecorder, written
from bridge.store.protocols import EventFilter
from bridge.store.schema import SCHEMA_VERSION, postgres_migration

log = logging.getLogger(__name__)

# pg_advisory_lock key held while migrating: "simbridge" as a 63-bit number.
MIGRATION_LOCK = int.from_bytes(b"simbrdge", "big") >> 1
# The channels other daemons NOTIFY on commit.
JOBS_CHANNEL = "simbridge_jobs"  # payload: the account whose queue has new work

# What says the database is out of reach (down, refusing connections, ours
# terminated, the pool's wait run out), as opposed to a statement's error.
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
    asyncpg.exceptions.InsufficientResourcesError, asyncpg.exceptions.InvalidCatalogNameError)
RETRY_AFTER_S = 5.0

_PLACEHOLDER = re.compile(r"\?")


def sql(statement: str) -> str:
    """SQLite's ``?`` placeholders numbered as PostgreSQL's ``$1, $2, …``."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", statement)


async def add_counts(conn: asyncpg.Connection, deltas: collections.Counter[str]) -> None:
    """Append this transaction's counter deltas (rows, not one hot row per
    counter: daemons committing at once do not queue behind each other)."""
    names = [name for name, n in deltas.items() if n]
    if names:
        await conn.execute("INSERT INTO counters (name, n) SELECT * FROM unnest($1::text[], $2::bigint[])",
                           names, [deltas[name] for name in names])


class _Conn(asyncpg.Connection):
    """A pooled connection released without asyncpg's reset statement (``UNLISTEN *; RESET ALL; …``, one
    more round trip per store call): ours never take session state — no LISTEN (that connection is not
    pooled), no SET, no session advisory lock (migrations take theirs on a connection of their own), no
    cursor outside a transaction. An open transaction is still rolled back on release (asyncpg's
    ``Connection.reset`` does that whatever the query; see its docstring)."""

    def get_reset_query(self) -> str:
        return ""


class PgBase:
    """The pool, migrations and notifications; :class:`Lifecycle`."""

    def __init__(self, url: str, *, event_filter: EventFilter, pool_size: int = 8,
                 connect_timeout: float = 10.0) -> None:
        self.url = url
        self.pool_size = pool_size
        # This opening's incarnation: new jobs carry it in their id (model.Job.job_id), so
        # that the ids a restored database hands out again are new to every agent's ledger.
        self.incarnation = secrets.token_hex(6)
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self.node = secrets.token_hex(8)  # this process on the notification channels
        self._recorder = EventRecorder(event_filter, self.node)
        self._keywords = Keywords()
        self._region: str | None = None
        self._queue_listener: Callable[[str], None] | None = None

    # -- connections ------------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection in one transaction (read committed)."""
        counter = [0]
        token = written.set(counter)
        try:
            async with self._read() as conn, conn.transaction():
                yield conn
        finally:
            written.reset(token)
        self._recorder.committed(counter[0])

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection of the pool; a database out of reach is :class:`StoreUnavailable`."""
        try:
            async with self.pool.acquire(timeout=self.connect_timeout) as conn:
                yield conn
        except UNREACHABLE as exc:
            raise StoreUnavailable(f"the database does not answer ({type(exc).__name__}: {exc})",
                                   retry_after=RETRY_AFTER_S) from exc

    async def _fetch_dicts(self, statement: str, *args: Any) -> list[dict[str, Any]]:
        async with self._read() as conn:
            return [dict(r) for r in await conn.fetch(statement, *args)]

    # -- Lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        await self._migrate()
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size,
                                               timeout=self.connect_timeout, command_timeout=60,
                                               connection_class=_Conn)
        self._listen_task = asyncio.create_task(self._listen_forever(), name="store notifications")

    async def _migrate(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
        try:
            # Session lock: a second daemon waits here until the first has migrated.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                version = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
                if version > SCHEMA_VERSION:
                    raise RuntimeError(f"{self.safe_url}: schema version {version} is newer than this "
                                       f"simbridge knows ({SCHEMA_VERSION}); upgrade simbridge")
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    async with conn.transaction():  # the schema and its version move together
                        await conn.execute(postgres_migration(number))
                        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)
                    log.info("store %s migrated to schema %d", self.safe_url, number)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        finally:
            await conn.close()

    @property
    def safe_url(self) -> str:
        """The URL without its password (for logs)."""
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.url)

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close(timeout=2)
            self._listen_conn = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                pool.terminate()

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.fetchval("SELECT 1")

    # -- notifications ----------------------------------------------------------------

    def set_queue_listener(self, callback: Callable[[str], None] | None) -> None:
        self._queue_listener = callback

    def _queue_changed(self, account: str) -> None:
        listener = self._queue_listener
        if listener is not None:
            listener(account)

    async def _listen_forever(self) -> None:
        """LISTEN on the channels, reconnecting after a lost connection; after
        each (re)connection every listener is called once (work may have come
        while we were deaf)."""
        delay = 0.5
        first = True
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
                self._listen_conn = conn
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(JOBS_CHANNEL, self._on_notify)
                await conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
                delay = 0.5
                if not first:
                    self._queue_changed("")
                    self._recorder.poke()
                first = False
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("store notifications: %s; again in %.1f s", exc, delay)
            finally:
                if self._listen_conn is not None:
                    with contextlib.suppress(Exception):
                        self._listen_conn.terminate()
                    self._listen_conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        """Another daemon's notice (ours were acted on at commit)."""
        node, _, account = payload.partition(":")
        if node == self.node:
            return
        if channel == JOBS_CHANNEL:
            self._queue_changed(account)
        else:
            self._recorder.poke()
