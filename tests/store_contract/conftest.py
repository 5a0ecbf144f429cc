"""The store contract: what every backend promises, door by door
(bridge/store/protocols.py). Each test takes the ``store`` fixture, which is
parametrised over the backends in :data:`BACKENDS` (SQLite in a temporary
file; PostgreSQL in a schema of its own in a database made for the session,
see tests/pg_util.py); every test runs unchanged on each.

The tests use only the protocols' methods. Time-dependent rules are driven
through the methods' ``now`` arguments or dates in the jobs, never by waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from pg_util import new_schema, pg_database  # noqa: F401 - the session's database fixture

from bridge.core import events
from bridge.store.postgres import PostgresStore
from bridge.store.protocols import Store
from bridge.store.sqlite import SqliteStore


class Sends:
    """The event filter the contract tests give the store: which kinds each
    account is sent (every kind by default), changeable during a test, and
    remembering what it was asked."""

    def __init__(self, kinds_by_account: dict[str, Iterable[str]] | None = None) -> None:
        self.kinds: dict[str, frozenset[str]] = {}
        self.set(kinds_by_account if kinds_by_account is not None
                 else {"a": events.ALL_KINDS, "b": events.ALL_KINDS})
        self.asked: list[tuple[str, str]] = []

    def set(self, kinds_by_account: dict[str, Iterable[str]]) -> None:
        self.kinds = {account: frozenset(kinds) for account, kinds in kinds_by_account.items()}

    def wants(self, account: str, kind: str) -> bool:
        self.asked.append((account, kind))
        return kind in self.kinds.get(account, frozenset())


class Backend:
    """Makes stores of one backend on one database (a second store made by
    :meth:`new` sees what the first one wrote: a restart)."""

    name = "abstract"

    def new(self, event_filter: Sends) -> Store:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "contract.db"

    def new(self, event_filter: Sends) -> Store:
        return SqliteStore(self.path, event_filter=event_filter, synchronous="normal")


class PostgresBackend(Backend):
    """A schema of its own in the session's throw-away database."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url

    def new(self, event_filter: Sends) -> Store:
        return PostgresStore(self.url, event_filter=event_filter, pool_size=4)


BACKENDS = ("postgresql", "sqlite")


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return SqliteBackend(tmp_path)
    # Asked for only here, so that SQLite runs need no server (skipped when none answers).
    database = request.getfixturevalue("pg_database")
    return PostgresBackend(await new_schema(database))


@pytest.fixture
def sends() -> Sends:
    return Sends()


@pytest.fixture
async def store(backend: Backend, sends: Sends) -> AsyncIterator[Store]:
    s = backend.new(sends)
    await s.open()
    yield s
    await s.close()
