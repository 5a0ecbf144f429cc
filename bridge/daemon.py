"""The daemon: store, agent listener, dispatcher, API, and the agents that run
inside it (virtual phones; modems). Each device runs in a task group of its
own under a supervisor, so that one device's failure never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.api.app import Api
from bridge.config import AccountConfig, Config, DeviceConfig
from bridge.core.optout import Keywords
from bridge.dispatch.dispatcher import Dispatcher
from bridge.dispatch.listener import AgentListener
from bridge.dispatch.tokens import TokenBook
from bridge.ops.metrics import Metrics
from bridge.ops.notify import Notifier
from bridge.ops.tls import client_context, server_context
from bridge.store.protocols import Store
from bridge.store.sqlite import SqliteStore
from bridge.webhooks.deliverer import WebhookDeliverer
from bridge.webhooks.policy import WebhookPolicy
from device_agents import protocol
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

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
    def __init__(self, config: Config, *, store: Store | None = None, eager_workers: bool = False) -> None:
        # eager_workers: start the bulk worker process with the daemon (simbridge run
        # does; tests leave it to the first bulk request, to spare a process each).
        self.eager_workers = eager_workers
        self.config = config
        self.webhook_policy = WebhookPolicy(config)  # which events the store records for each account
        self.store = store or SqliteStore(config.store.path, event_filter=self.webhook_policy,
                                          synchronous=config.store.synchronous)
        self.tokens = TokenBook.load(config.data_dir, self._fixed_tokens(config))
        self.dispatcher = Dispatcher(config=config, store=self.store)
        agents_tls = config.agents.tls_cert and config.agents.tls_key
        self.listener = AgentListener(config=config, store=self.store, dispatcher=self.dispatcher,
                                      tokens=self.tokens,
                                      ssl=server_context(config.agents.tls_cert, config.agents.tls_key)
                                      if agents_tls else None)
        self.api = Api(config=config, store=self.store, on_enqueued=self.dispatcher.wake,
                       extra_routes=self._extra_routes)
        self.metrics = Metrics(self)
        self.listener.on_job_state = self.metrics.job_state
        self.notifier = Notifier()
        self.dispatcher.on_online.append(lambda _device, _online: self._notify_status())
        self._tg: asyncio.TaskGroup | None = None
        self.webhooks = WebhookDeliverer(config=config, store=self.store)
        self.api.simulate = self.simulate
        self.api.devices_view = self.devices_view
        self.api.phones_online = self.phones_online
        self.virtual: dict[str, AgentRuntime] = {}
        self.android: Any = None  # bridge.android.AndroidSupervisor when phones are configured
        self._android_task: asyncio.Task[Any] | None = None
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
        self.store.set_opt_out(Keywords(self.config.api.stop_words, self.config.api.start_words),
                               self.config.api.default_region)
        await self.listener.start()
        self._start_android()
        self.api.workers.start(eager=self.eager_workers)
        self._runner = web.AppRunner(self.api.app(), access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        host, port = self.config.api.listen
        api_tls = self.config.api.tls_cert and self.config.api.tls_key
        site = web.TCPSite(self._runner, host, port, ssl_context=server_context(
            self.config.api.tls_cert, self.config.api.tls_key) if api_tls else None)
        await site.start()
        self.api_port = self._runner.addresses[0][1]
        log.info("API on http://%s:%d, agents on ws://%s:%d, store %s", host, self.api_port,
                 *self.config.agents.listen[:1], self.listener.port, self.config.store.path)

    def agent_url(self) -> str:
        host = self.config.agents.listen[0]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        scheme = "wss" if self.listener.ssl is not None else "ws"
        return f"{scheme}://{host}:{self.listener.port}"

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start, run until ``stop`` is set (or forever), then stop cleanly."""
        stop = stop or asyncio.Event()
        await self.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.dispatcher.run())
                # Stopped with the group: it records what it delivered and hands back the rest.
                tg.create_task(supervise("webhook deliverer", self.webhooks.run))
                if self.android is not None:
                    self._android_task = tg.create_task(supervise("android supervisor", self.android.run))
                for device in self.config.devices:
                    self._start_device(tg, device)
                self._tg = tg
                tg.create_task(self.notifier.watchdog_loop(self.health_check))
                self.ready.set()
                self.notifier.ready(self._status_line())
                await stop.wait()
                self._tg = None
                self.notifier.stopping()
                raise _Stop()
        except* _Stop:
            pass
        finally:
            await self.shutdown()

    def _start_device(self, tg: asyncio.TaskGroup, device: DeviceConfig) -> None:
        if device.options.get("standalone"):
            return  # its agent runs elsewhere and connects to us
        if device.kind == "virtual":
            runtime = self._virtual_runtime(device)
            self.virtual[device.id] = runtime
            self._device_tasks[device.id] = tg.create_task(
                supervise(f"virtual device {device.id}", runtime.run))
        elif device.kind == "modem":
            from device_agents.modem.agent import ModemAgent

            modem = ModemAgent.from_device(device, url=self.agent_url(), token=self.tokens.token_for(device.id),
                                           data_dir=self.config.data_dir, window=self.config.agents.window,
                                           ssl=self._agent_client_ssl())
            self._device_tasks[device.id] = tg.create_task(supervise(f"modem {device.id}", modem.run))

    async def _reload_android(self, old: Config) -> None:
        """Phones on USB added, removed or changed: a new supervisor takes over.
        Agents already running on phones keep their sessions; the set-up steps
        it runs again on the plugged phones change nothing that is in place."""
        def usb(config: Config) -> list[DeviceConfig]:
            return [d for d in config.devices if d.kind == "android" and not d.options.get("standalone")]
        if usb(old) == usb(self.config):
            return
        if self._android_task is not None:
            self._android_task.cancel()
            await asyncio.wait([self._android_task])
            self._android_task = None
        if self.android is not None:
            self.dispatcher.on_online.remove(self.android.agent_connected)
            self.dispatcher.dialers.pop("android", None)
            self.android = None
        self._start_android()
        if self.android is not None and self._tg is not None:
            for device_id in self.dispatcher.sessions:
                if device_id in self.android.states():
                    self.android.agent_connected(device_id, True)
            self._android_task = self._tg.create_task(supervise("android supervisor", self.android.run))
        log.info("reload: Android phones on USB are now %s",
                 ", ".join(d.id for d in usb(self.config)) or "none")

    def _start_android(self) -> None:
        """Phones on USB: found with adb, set up, their agent started; calls go through adb."""
        phones = [d for d in self.config.devices if d.kind == "android" and not d.options.get("standalone")]
        if not phones:
            return
        from bridge.devices.android import AndroidSupervisor

        a = self.config.android
        self.android = AndroidSupervisor(
            devices=phones, token_for=self.tokens.token_for, agent_port=self.listener.port,
            adb_host=a.adb_server[0], adb_port=a.adb_server[1], device_port=a.device_port,
            start_adb_server=a.start_adb_server,
            agent_options={"poll_interval": a.poll_interval, "confirm_timeout": a.confirm_timeout})
        self.dispatcher.on_online.append(self.android.agent_connected)
        self.dispatcher.dialers["android"] = self.android.dial

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
                            timezone="UTC", ssl=self._agent_client_ssl())

    def _agent_client_ssl(self) -> Any:
        cert = self.config.agents.tls_cert
        return client_context(cert) if cert is not None and self.listener.ssl is not None else None

    async def _stop_device(self, device_id: str) -> None:
        """Stop an in-daemon agent (device removed or changed by a reload)."""
        task = self._device_tasks.pop(device_id, None)
        runtime = self.virtual.pop(device_id, None)
        if runtime is not None:
            await runtime.aclose()
            close = getattr(runtime.backend, "close", None)
            if close:
                close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- reload (SIGHUP) --------------------------------------------------------------

    RESTART_ONLY = (("api", "listen"), ("api", "tls_cert"), ("api", "tls_key"), ("agents", "listen"),
                    ("agents", "tls_cert"), ("agents", "tls_key"), ("store", "path"), ("store", "synchronous"))

    async def reload(self, config: Config) -> None:
        """Take a new configuration without a restart: accounts, webhooks,
        devices and their limits. Sessions of devices still configured stay up;
        removed devices are disconnected; added in-daemon devices start.
        Listen addresses, TLS and the store need a restart (kept as they are)."""
        old = self.config
        self.notifier.reloading()
        kept: dict[str, dict[str, Any]] = {}
        for section, key in self.RESTART_ONLY:
            before, after = getattr(getattr(old, section), key), getattr(getattr(config, section), key)
            if before != after:
                log.warning("reload: %s.%s changed; it takes effect at the next restart", section, key)
                kept.setdefault(section, {})[key] = before
        for section, values in kept.items():
            config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section),
                                                                                 **values)})
        self.config = config
        self.tokens.set_fixed(self._fixed_tokens(config))
        self.webhook_policy.reload(config)
        self.store.set_opt_out(Keywords(config.api.stop_words, config.api.start_words), config.api.default_region)
        self.dispatcher.reload(config)
        self.api.reload(config)
        self.webhooks.reload(config)
        self.listener.reload(config)
        for device_id in list(self._device_tasks):
            before, after = old.device(device_id), config.device(device_id)
            if after is None or before is None or (before.kind, before.options, before.token) != (
                    after.kind, after.options, after.token):
                await self._stop_device(device_id)
        if self._tg is not None:
            for device in config.devices:
                if device.id not in self._device_tasks:
                    self._start_device(self._tg, device)
        await self._reload_android(old)
        added = {d.id for d in config.devices} - {d.id for d in old.devices}
        removed = {d.id for d in old.devices} - {d.id for d in config.devices}
        log.info("configuration reloaded: %d account(s), %d device(s) (added: %s; removed: %s)",
                 len(config.accounts), len(config.devices), ", ".join(sorted(added)) or "none",
                 ", ".join(sorted(removed)) or "none")
        self.notifier.ready(self._status_line())

    # -- health, status, extra routes -------------------------------------------------

    async def health_check(self) -> None:
        """What the watchdog ping vouches for: the store answers (the loop ran us)."""
        await self.store.ping()

    def _status_line(self) -> str:
        online = sum(1 for d in self.config.devices if d.id in self.dispatcher.sessions)
        return (f"serving: API on port {self.api_port}, agents on port {self.listener.port}; "
                f"{online}/{len(self.config.devices)} device(s) online")

    def _notify_status(self) -> None:
        if self.ready.is_set() and self.notifier.enabled:
            self.notifier.status(self._status_line())

    def _extra_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics.handler)
        app.router.add_post("/api/v1/devices/{id}/recheck", self._recheck_endpoint)

    async def _recheck_endpoint(self, request: web.Request) -> web.Response:
        """``simbridge pair --revoke`` asks: close the device's session if its
        token was revoked. Bearer: the access key of the device's account."""
        device = self.config.device(request.match_info["id"])
        account = self.config.account(device.account) if device else None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if account is None or not hmac.compare_digest(given.encode(), account.access_key.encode()):
            return web.json_response({"status": "error", "message": "unknown device or wrong access key"},
                                     status=404)
        closed = await self.listener.recheck(device.id)
        return web.json_response({"status": "success", "data": {"device": device.id, "closed": closed}})

    async def shutdown(self) -> None:
        # Take no more work first (the API), then let the agents go, then persist.
        if self._runner is not None:
            await self._runner.cleanup()
        for runtime in self.virtual.values():
            await runtime.aclose()
            close = getattr(runtime.backend, "close", None)
            if close:
                close()
        await self.listener.stop()
        self.api.workers.close()
        await self.store.close()
        self.notifier.close()
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

    def phones_online(self, login: str) -> bool:
        """Whether a connected device of the account can place calls (click-to-call)."""
        return any(s.hello.capabilities.calls for s in self.dispatcher.online(login) if not s.closed)

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
            setup = self.android.states().get(device.id) if self.android is not None else None
            if setup is not None and not session:
                # Not connected: the set-up step it is at says more than "offline".
                out[-1].update(state=setup.state, reason=setup.reason, step=setup.step)
        if self.android is not None:
            for serial in self.android.unconfigured():
                out.append({"id": None, "serial": serial, "kind": "android", "account": None,
                            "state": "unconfigured", "signal": None, "battery": None, "last_seen": None,
                            "reason": f"phone {serial} is plugged in but no [[devices]] entry has "
                                      f"serial = \"{serial}\"; it is left alone"})
        return out


class _Stop(Exception):
    pass


def install_signal_handlers(stop: asyncio.Event, reload: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT set ``stop``; SIGHUP calls ``reload`` (when given)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if reload is not None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, reload)
