"""The one place that picks a backend: SQLite (the embedded default) or
PostgreSQL when a database URL is given (``[store] url``)."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.store.protocols import EventFilter, Store


def open_store(*, url: str | None, path: Path, synchronous: str, event_filter: EventFilter) -> Store:
    """The store the configuration names (not yet opened)."""
    if url:
        from bridge.store.postgres import PostgresStore
        return PostgresStore(url, event_filter=event_filter)
    from bridge.store.sqlite import SqliteStore
    return SqliteStore(path, event_filter=event_filter, synchronous=synchronous)


def describe(url: str | None, path: Path) -> str:
    """The store for logs: the SQLite file, or the database URL without its password."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url) if url else str(path)
