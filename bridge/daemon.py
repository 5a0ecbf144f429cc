"""The daemon: store, agent listener, dispatcher, API, and the agents that run
inside it (virtual phones; modems). Each device runs in a task group of its
own under a supervisor, so that one device's failure never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from device_agents import protocol
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

from .agents import AgentListener
from .api import Api
from .config import AccountConfig, Config, DeviceConfig
from .dispatcher import Dispatcher
from .store import SqliteStore, Store
from .tokens import TokenBook

log = logging.getLogger(__name__)


def radio_log_path(config: Config, device_id: str) -> Path:
    return config.data_dir / f"virtual-{device_id}-radio.jsonl"


async def supervise(name: str, factory: Callable[[], Awaitable[Any]], *, backoff_max: float = 60.0) -> None:
    """Run ``factory()`` again whenever it fails, with capped exponential backoff."""
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


class Daemon:
    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.config = config
        self.store = store or SqliteStore(config.store.path, synchronous=config.store.synchronous)
        self.tokens = TokenBook.load(config.data_dir, self._fixed_tokens(config))
        self.dispatcher = Dispatcher(config=config, store=self.store)
        self.listener = AgentListener(config=config, store=self.store, dispatcher=self.dispatcher,
                                      tokens=self.tokens)
        self.api = Api(config=config, store=self.store, on_enqueued=self.dispatcher.wake)
        self.api.simulate = self.simulate
        self.api.devices_view = self.devices_view
        self.virtual: dict[str, AgentRuntime] = {}
        self._device_tasks: dict[str, asyncio.Task[Any]] = {}
        self._runner: web.AppRunner | None = None
        self.ready = asyncio.Event()
        self.api_port: int | None = None

    @staticmethod
    def _fixed_tokens(config: Config) -> dict[str, str]:
        return {d.id: d.token for d in config.devices if d.token}

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        self.store.set_webhooks({a.login: a.webhook_format for a in self.config.accounts if a.webhook_url})
        await self.listener.start()
        self._runner = web.AppRunner(self.api.app(), access_log=None)
        await self._runner.setup()
        host, port = self.config.api.listen
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.api_port = self._runner.addresses[0][1]
        log.info("API on http://%s:%d, agents on ws://%s:%d, store %s", host, self.api_port,
                 *self.config.agents.listen[:1], self.listener.port, self.config.store.path)

    def agent_url(self) -> str:
        host = self.config.agents.listen[0]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"ws://{host}:{self.listener.port}"

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start, run until ``stop`` is set (or forever), then stop cleanly."""
        stop = stop or asyncio.Event()
        await self.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.dispatcher.run())
                for device in self.config.devices:
                    self._start_device(tg, device)
                self.ready.set()
                await stop.wait()
                raise _Stop()
        except* _Stop:
            pass
        finally:
            await self.shutdown()

    def _start_device(self, tg: asyncio.TaskGroup, device: DeviceConfig) -> None:
        if device.kind == "virtual":
            runtime = self._virtual_runtime(device)
            self.virtual[device.id] = runtime
            self._device_tasks[device.id] = tg.create_task(
                supervise(f"virtual device {device.id}", runtime.run))

    def _virtual_runtime(self, device: DeviceConfig) -> AgentRuntime:
        o = device.options
        settings = RadioSettings(**{k: o[k] for k in ("latency", "jitter", "delivery_delay", "failure_rate",
                                                      "fail_prefixes", "delivery_reports") if k in o})
        radio = VirtualRadio(device_id=device.id, radio_log=radio_log_path(self.config, device.id),
                             settings=settings)
        journal = Journal(self.config.data_dir / f"virtual-{device.id}-journal.jsonl")
        return AgentRuntime(url=self.agent_url(), device_id=device.id, token=self.tokens.token_for(device.id),
                            backend=radio, journal=journal, agent_name="simbridge-virtual/1",
                            window=self.config.agents.window, workers=self.config.agents.window,
                            timezone="UTC")

    async def shutdown(self) -> None:
        for runtime in self.virtual.values():
            await runtime.aclose()
            close = getattr(runtime.backend, "close", None)
            if close:
                close()
        await self.listener.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.store.close()
        log.info("stopped")

    # -- operations -----------------------------------------------------------------

    def _virtual_for(self, account: AccountConfig, device_id: str | None) -> AgentRuntime:
        for dev_id, runtime in self.virtual.items():
            device = self.config.device(dev_id)
            if device and device.account == account.login and (device_id is None or dev_id == device_id):
                return runtime
        raise LookupError(f"no virtual device {device_id or ''} for account {account.login}".replace("  ", " "))

    async def simulate(self, account: AccountConfig, what: str, body: dict[str, Any]) -> dict[str, Any]:
        runtime = self._virtual_for(account, body.get("device"))
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
        runtime.emit([event])
        return {"device": runtime.device_id, "event_id": event.event_id, "kind": event.kind}

    def devices_view(self, account: AccountConfig | None) -> list[dict[str, Any]]:
        out = []
        for device in self.config.devices:
            if account is not None and device.account != account.login:
                continue
            health = self.dispatcher.health.get(device.id)
            status = health.status if health else None
            session = self.dispatcher.sessions.get(device.id)
            out.append({
                "id": device.id, "kind": device.kind, "account": device.account,
                "state": "online" if session else "offline",
                "reason": health.reason if health else "never connected",
                "signal": status.signal if status else None,
                "battery": status.battery if status else None,
                "network": status.network if status else None,
                "operator": status.operator if status else None,
                "last_seen": health.last_seen if health else None,
                "in_flight": session.inflight if session else 0,
                "agent": health.agent if health else "",
                "delivery_reports": bool(health and health.capabilities and health.capabilities.delivery_reports),
            })
        return out


class _Stop(Exception):
    pass


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
