"""A throw-away PostgreSQL database for tests: the server comes from
SIMBRIDGE_TEST_PG (default: the local one, trust authentication); one
database per test session, ``simbridge_test_<pid>_<random>``, dropped at the
end; each test can take a schema of its own in it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

SERVER = os.environ.get("SIMBRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def with_schema(url: str, schema: str) -> str:
    """The URL whose connections work in ``schema`` (asyncpg passes unknown
    query parameters on as server settings)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}search_path={schema}"


async def _admin_async(statement: str) -> None:
    conn = await asyncpg.connect(SERVER, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _admin(statement: str) -> None:
    """Run one statement as the server's admin, from any thread (a session
    fixture may be set up while a test's event loop runs)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _admin_async(statement)).result()


def reachable() -> str | None:
    """None when the server answers, else why not."""
    try:
        _admin("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"no PostgreSQL at {SERVER}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database for the session (its URL); dropped at the end."""
    why = reachable()
    if why is not None:
        pytest.skip(why)
    name = f"simbridge_test_{os.getpid()}_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(SERVER, name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def new_schema(database_url: str) -> str:
    """A fresh schema in the session's database; the URL that works in it."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return with_schema(database_url, schema)
