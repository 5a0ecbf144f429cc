"""GSM modems on serial ports: the modem agent runs inside the daemon, one
supervised task per modem (or standalone on another host, then it only
connects to us)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.config import DeviceConfig
from bridge.devices.base import AgentTasks, DeviceHost, SetupView, changed


class ModemKind:
    name = "modem"

    def __init__(self, host: DeviceHost) -> None:
        self.host = host
        self._tasks = AgentTasks("modem")

    async def apply(self, devices: Sequence[DeviceConfig]) -> None:
        from device_agents.modem.agent import ModemAgent  # pyserial and the AT stack only when modems are configured

        wanted = {d.id: d for d in devices}
        for device_id, before in self._tasks.running().items():
            after = wanted.get(device_id)
            if after is None or changed(before, after):
                await self._tasks.stop(device_id)
        config = self.host.config
        for device in devices:
            if device.id in self._tasks:
                continue
            agent = ModemAgent.from_device(device, url=self.host.agent_url(), token=self.host.token_for(device.id),
                                           data_dir=config.data_dir, window=config.agents.window,
                                           ssl=self.host.agent_client_ssl())
            self._tasks.start(device, agent.run)

    async def run(self) -> None:
        """Its agents run as tasks of their own (started by ``apply``)."""

    async def aclose(self) -> None:
        await self._tasks.stop_all()

    def setup(self, device_id: str) -> SetupView | None:
        return None

    def extra_rows(self) -> list[dict[str, Any]]:
        return []
