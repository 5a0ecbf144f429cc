"""The store contract: what every backend promises, door by door
(bridge/store/protocols.py). Each test takes the ``store`` fixture, which is
parametrised over the backends in :data:`BACKENDS`; a new backend (e.g.
PostgreSQL) is one more entry there and runs every test unchanged.

The tests use only the protocols' methods. Time-dependent rules are driven
through the methods' ``now`` arguments or dates in the jobs, never by waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from bridge.core import events
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


# name -> factory(tmp_path). PostgreSQL joins here (skipping itself when no server is reachable).
BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": SqliteBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def sends() -> Sends:
    return Sends()


@pytest.fixture
async def store(backend: Backend, sends: Sends) -> AsyncIterator[Store]:
    s = backend.new(sends)
    await s.open()
    yield s
    await s.close()
