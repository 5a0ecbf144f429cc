"""The ``android`` device kind: phones on this box's USB, driven over adb.

Each configured phone gets an agent inside the daemon (an
:class:`~device_agents.runtime.AgentRuntime` whose backend talks to the phone
over adb), so the store, dispatcher and webhooks see one device session per
phone, exactly as for a modem. Phones whose agent runs elsewhere
(``standalone``) only connect to us.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from bridge.config import DeviceConfig
from bridge.devices.base import DeviceHost, SetupView, supervise

from .phone import DialError
from .supervisor import AndroidSupervisor, Settings

log = logging.getLogger(__name__)


class AndroidKind:
    name = "android"

    def __init__(self, host: DeviceHost) -> None:
        self.host = host
        self.supervisor: AndroidSupervisor | None = None
        self._devices: tuple[DeviceConfig, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._online: set[str] = set()

    def _supervisor(self, devices: Sequence[DeviceConfig]) -> AndroidSupervisor:
        config = self.host.config
        a = config.android
        settings = Settings(data_dir=config.data_dir, agent_url=self.host.agent_url, token_for=self.host.token_for,
                            agent_ssl=self.host.agent_client_ssl, poll_interval=a.poll_interval,
                            confirm_timeout=a.confirm_timeout, window=config.agents.window)
        return AndroidSupervisor(devices=devices, settings=settings, adb_host=a.adb_server[0],
                                 adb_port=a.adb_server[1], start_adb_server=a.start_adb_server,
                                 list_interval=min(2.0, a.poll_interval))

    async def apply(self, devices: Sequence[DeviceConfig]) -> None:
        """A new supervisor takes over when the phones change; each phone's
        agent resumes from its journal and remembered position."""
        if tuple(devices) == self._devices and (self.supervisor is not None or not devices):
            return
        self._devices = tuple(devices)
        await self.aclose()
        self.supervisor = self._supervisor(devices) if devices else None
        if self.supervisor is not None:
            for device_id in self._online:
                self.supervisor.agent_connected(device_id, True)
            self._task = asyncio.get_running_loop().create_task(
                supervise("android supervisor", self.supervisor.run), name="android supervisor")
        log.info("Android phones on USB: %s", ", ".join(d.id for d in devices) or "none")

    async def run(self) -> None:
        """The supervisor runs as a task of its own (started by ``apply``)."""

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    def agent_connected(self, device_id: str, connected: bool) -> None:
        (self._online.add if connected else self._online.discard)(device_id)
        if self.supervisor is not None:
            self.supervisor.agent_connected(device_id, connected)

    async def dial(self, device_id: str, number: str) -> None:
        if self.supervisor is None:
            raise DialError(f"no android device {device_id!r}")
        await self.supervisor.dial(device_id, number)

    def setup(self, device_id: str) -> SetupView | None:
        state = self.supervisor.states().get(device_id) if self.supervisor is not None else None
        if state is None:
            return None
        reason = state.reason + ("" if not state.notes else " (note: " + "; ".join(state.notes) + ")")
        return SetupView(state.state, state.step, reason)

    def extra_rows(self) -> list[dict[str, Any]]:
        if self.supervisor is None:
            return []
        return [{"id": None, "serial": serial, "kind": "android", "account": None,
                 "state": "unconfigured", "signal": None, "battery": None, "last_seen": None,
                 "reason": f"phone {serial} is plugged in but no [[devices]] entry has "
                           f"serial = \"{serial}\"; it is left alone"}
                for serial in self.supervisor.unconfigured()]
