"""Shared test helpers: a real daemon on loopback ports, and waiting on conditions.

No fixed sleeps: tests wait for a condition with a deadline, scaled by
SIMBRIDGE_TEST_TIMEOUT_FACTOR on slow machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge import config as config_module
from bridge.daemon import Daemon

FACTOR = float(os.environ.get("SIMBRIDGE_TEST_TIMEOUT_FACTOR", "1"))


def free_port() -> int:
    """A loopback TCP port nobody listens on (for daemons run as subprocesses)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timeout(seconds: float) -> float:
    return seconds * FACTOR


async def wait_until(condition: Callable[[], Any | Awaitable[Any]], *, within: float = 10.0,
                     every: float = 0.02, what: str = "condition") -> Any:
    """Poll ``condition`` (sync or async) until it is truthy; fail after ``within`` s."""
    deadline = time.monotonic() + timeout(within)
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout(within):g} s waiting for {what}")
        await asyncio.sleep(every)


def make_config(tmp_path: Path, *, devices: list[dict[str, Any]] | None = None,
                accounts: list[dict[str, Any]] | None = None, **sections: dict[str, Any]) -> config_module.Config:
    """A config on ephemeral loopback ports with its store in ``tmp_path``."""
    data: dict[str, Any] = {
        "api": {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:8080", "timezone": "Europe/Paris"},
        "agents": {"listen": "127.0.0.1:0", "lease_s": 30, "requeue_grace_s": 60},
        "store": {"path": str(tmp_path / "simbridge.db"), "synchronous": "normal"},
        "accounts": accounts if accounts is not None else
        [{"login": "user@email.com", "access_key": "your-access-key"}],
        "devices": devices if devices is not None else
        [{"id": "sim-1", "kind": "virtual", "account": "user@email.com", "latency": 0.0, "jitter": 0.0,
          "delivery_delay": 0.0, "max_per_minute": 0}],
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_module.parse(data, source="test")


@contextlib.asynccontextmanager
async def running(config: config_module.Config) -> AsyncIterator[Daemon]:
    """A real daemon (API, agent listener, dispatcher, virtual phones) until the block ends."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.create_task(daemon.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=timeout(15), return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what stopped it
    if not daemon.ready.is_set():
        ready.cancel()
        task.cancel()
        raise AssertionError("daemon did not become ready")
    try:
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout(15))


def api_url(daemon: Daemon, path: str) -> str:
    return f"http://127.0.0.1:{daemon.api_port}{path}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest-timeout's limits (``timeout`` in pyproject.toml, ``@pytest.mark.timeout(N)``)
    scale with SIMBRIDGE_TEST_TIMEOUT_FACTOR like every other deadline of the tests."""
    if FACTOR == 1:
        return
    default = config.getoption("timeout", None) or config.getini("timeout") or 0
    for item in items:
        marker = item.get_closest_marker("timeout")
        kwargs = dict(marker.kwargs) if marker is not None else {}
        seconds = kwargs.pop("timeout", None)
        if marker is not None and marker.args:
            seconds = marker.args[0]
        seconds = float(default if seconds is None else seconds)
        if seconds > 0:
            item.add_marker(pytest.mark.timeout(timeout(seconds), **kwargs), append=False)


@pytest.fixture
def tmp_config(tmp_path: Path) -> config_module.Config:
    return make_config(tmp_path)


@pytest.fixture(autouse=True)
def _restore_logging():
    """A test that runs the CLI in-process sets up logging on its captured
    stderr; put the root logger back so that later tests do not log into a
    closed stream."""
    import logging
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
