"""Virtual phones: an agent runtime with a simulated radio, inside the daemon
(demo mode and tests). The only kind that ``simbridge simulate`` can drive."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.config import AccountConfig, Config, DeviceConfig
from bridge.devices.base import AgentTasks, DeviceHost, SetupView, changed
from device_agents import protocol
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

RADIO_KEYS = ("latency", "jitter", "delivery_delay", "failure_rate", "fail_prefixes", "delivery_reports", "serial",
              "cap_per_minute")


def radio_log_path(config: Config, device_id: str) -> Path:
    return config.data_dir / f"virtual-{device_id}-radio.jsonl"


class VirtualKind:
    name = "virtual"

    def __init__(self, host: DeviceHost) -> None:
        self.host = host
        self.runtimes: dict[str, AgentRuntime] = {}
        self._radios: dict[str, VirtualRadio] = {}
        self._tasks = AgentTasks("virtual device")

    def _runtime(self, device: DeviceConfig) -> AgentRuntime:
        config = self.host.config
        o = device.options
        settings = RadioSettings(**{k: o[k] for k in RADIO_KEYS if k in o})
        radio = self._radios[device.id] = VirtualRadio(device_id=device.id, settings=settings,
                                                       radio_log=radio_log_path(config, device.id))
        journal = Journal(config.data_dir / f"virtual-{device.id}-journal.jsonl")
        return AgentRuntime(url=self.host.agent_url(), device_id=device.id, token=self.host.token_for(device.id),
                            backend=radio, journal=journal, agent_name="simbridge-virtual/1",
                            window=config.agents.window, workers=config.agents.window,
                            timezone="UTC", ssl=self.host.agent_client_ssl())

    async def apply(self, devices: Sequence[DeviceConfig]) -> None:
        wanted = {d.id: d for d in devices}
        running = self._tasks.running()
        for device_id, before in running.items():
            after = wanted.get(device_id)
            if after is None or changed(before, after):
                await self._stop(device_id)
        for device in devices:
            if device.id not in self._tasks:
                runtime = self.runtimes[device.id] = self._runtime(device)
                self._tasks.start(device, runtime.run)

    async def _stop(self, device_id: str) -> None:
        runtime = self.runtimes.pop(device_id, None)
        if runtime is not None:
            await runtime.aclose()
        radio = self._radios.pop(device_id, None)
        if radio is not None:
            radio.close()
        await self._tasks.stop(device_id)

    async def run(self) -> None:
        """Its agents run as tasks of their own (started by ``apply``)."""

    async def aclose(self) -> None:
        for device_id in list(self.runtimes):
            await self._stop(device_id)
        await self._tasks.stop_all()

    def setup(self, device_id: str) -> SetupView | None:
        return None

    def extra_rows(self) -> list[dict[str, Any]]:
        return []

    # -- simulate ----------------------------------------------------------------------

    def _runtime_for(self, account: AccountConfig, device_id: str | None) -> AgentRuntime | None:
        config = self.host.config
        for dev_id, runtime in self.runtimes.items():
            device = config.device(dev_id)
            if device and device.account == account.login and (device_id is None or dev_id == device_id):
                return runtime
        return None

    def simulate(self, account: AccountConfig, what: str, body: dict[str, Any]) -> dict[str, Any] | None:
        runtime = self._runtime_for(account, body.get("device"))
        if runtime is None:
            return None
        sender = body.get("from")
        if not isinstance(sender, str) or not sender:
            raise ValueError("'from' must be a phone number")
        now = time.time()
        if what == "incoming-sms":
            text = body.get("text")
            if not isinstance(text, str) or not text:
                raise ValueError("'text' must be a non-empty string")
            event: protocol.Event = protocol.SmsReceived(event_id=runtime.new_event_id(), sender=sender,
                                                         text=text, at=now)
        elif what == "call":
            missed = bool(body.get("missed"))
            duration = body.get("duration", 0)
            if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration < 0:
                raise ValueError("'duration' must be a number of seconds")
            event = protocol.CallEvent(event_id=runtime.new_event_id(),
                                       direction="missed" if missed else "incoming", number=sender,
                                       at=now - float(duration), duration_s=0.0 if missed else float(duration))
        else:
            raise LookupError(f"nothing to simulate called {what!r} (incoming-sms, call)")
        if not runtime.try_emit([event]):  # nothing taken: the caller is told, and may try again
            raise ValueError(f"nothing simulated: {runtime.journal_fault or 'the journal takes no writes'}; "
                             "try again once it does")
        return {"device": runtime.device_id, "event_id": event.event_id, "kind": event.kind}
