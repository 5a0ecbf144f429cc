"""What a device kind is to the daemon, and what the daemon offers it.

The daemon knows no device kind by name: it asks the registry
(:mod:`bridge.devices.registry`) for one :class:`DeviceKind` per kind, hands
each the devices of its kind, and runs them. A kind decides what running a
device means here: an agent task per device inside the daemon (virtual,
modem), or a supervisor that sets phones up over adb (android).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bridge.config import AccountConfig, Config, DeviceConfig

log = logging.getLogger(__name__)


class DeviceHost(Protocol):
    """What the daemon offers device kinds."""

    @property
    def config(self) -> Config: ...

    def agent_url(self) -> str:
        """Where an in-daemon agent dials the agent listener."""
        ...

    def agent_client_ssl(self) -> ssl.SSLContext | None: ...

    def token_for(self, device_id: str) -> str: ...

    @property
    def agent_port(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SetupView:
    """Where a device that is not connected stands (set-up step and reason)."""

    state: str
    step: str
    reason: str


class DeviceKind(Protocol):
    """One kind of device (``kind = "…"`` in ``[[devices]]``)."""

    name: str

    def apply(self, devices: Sequence[DeviceConfig]) -> Awaitable[None]:
        """Take the configured devices of this kind (at start and on every
        reload): start the new ones, stop the removed or changed ones, keep
        the others running untouched."""
        ...

    async def run(self) -> None:
        """Run until cancelled."""
        ...

    async def aclose(self) -> None:
        """Let the devices go (shutdown)."""
        ...

    def setup(self, device_id: str) -> SetupView | None:
        """Set-up state of a device that is not connected, if the kind knows more than "offline"."""
        ...

    def extra_rows(self) -> list[dict[str, Any]]:
        """Rows for ``simbridge devices`` that no configured device covers (e.g. an unknown phone on USB)."""
        ...


@runtime_checkable
class Dialer(Protocol):
    """A kind whose calls the bridge places itself (e.g. Android over adb)."""

    async def dial(self, device_id: str, number: str) -> None: ...


@runtime_checkable
class OnlineWatcher(Protocol):
    """A kind that wants to hear when a device's agent (dis)connects."""

    def agent_connected(self, device_id: str, connected: bool) -> None: ...


@runtime_checkable
class Simulator(Protocol):
    """A kind whose devices can be made to receive something (``simbridge simulate``)."""

    def simulate(self, account: AccountConfig, what: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """None when this kind has no device of ``account`` (matching ``body["device"]``)."""
        ...


async def supervise(name: str, factory: Callable[[], Awaitable[Any]], *, backoff_max: float = 60.0) -> None:
    """Run ``factory()`` again whenever it fails, with capped exponential backoff.
    The first failure of a cycle is logged with its traceback, repeats at DEBUG."""
    delay = 1.0
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            if time.monotonic() - started > 60:
                delay, failures = 1.0, 1
            if failures == 1:
                log.exception("%s failed; restarting", name)
            else:
                log.debug("%s failed again; restarting in %.0f s", name, delay, exc_info=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff_max)


class AgentTasks:
    """One supervised task per device, each started and stopped on its own so
    that one device's failure or removal never touches another. Used by the
    kinds whose agents run inside the daemon."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._configs: dict[str, DeviceConfig] = {}
        self._idle = asyncio.Event()

    def __contains__(self, device_id: str) -> bool:
        return device_id in self._tasks

    def running(self) -> dict[str, DeviceConfig]:
        return dict(self._configs)

    def start(self, device: DeviceConfig, factory: Callable[[], Awaitable[Any]]) -> None:
        task = asyncio.get_running_loop().create_task(
            supervise(f"{self.label} {device.id}", factory), name=f"{self.label}:{device.id}")
        self._tasks[device.id] = task
        self._configs[device.id] = device

    async def stop(self, device_id: str) -> None:
        task = self._tasks.pop(device_id, None)
        self._configs.pop(device_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop_all(self) -> None:
        for device_id in list(self._tasks):
            await self.stop(device_id)


def changed(before: DeviceConfig | None, after: DeviceConfig) -> bool:
    """Whether a device's agent must restart to take ``after``."""
    return before is None or (before.kind, before.options, before.token) != (
        after.kind, after.options, after.token)
