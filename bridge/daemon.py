"""The daemon: store, agent listener, dispatcher, API, and the agents that run
inside it (virtual phones; modems). Each device runs in a task group of its
own under a supervisor, so that one device's failure never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.api.app import Api
from bridge.config import AccountConfig, Config
from bridge.console.app import Console
from bridge.core.optout import Keywords
from bridge.core.sealing import Sealer
from bridge.devices.base import Dialer, OnlineWatcher, Simulator, supervise
from bridge.devices.registry import Kinds, by_kind
from bridge.dispatch.dispatcher import Dispatcher
from bridge.dispatch.listener import AgentListener
from bridge.dispatch.tokens import TokenBook
from bridge.ops.metrics import Metrics
from bridge.ops.notify import Notifier
from bridge.ops.tls import client_context, optional_server_context
from bridge.store.factory import describe, open_store
from bridge.store.model import StoreUnavailable
from bridge.store.protocols import Store
from bridge.webhooks.deliverer import WebhookDeliverer
from bridge.webhooks.policy import WebhookPolicy

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, *, store: Store | None = None, eager_workers: bool = False) -> None:
        # eager_workers: start the bulk worker process with the daemon (simbridge run
        # does; tests leave it to the first bulk request, to spare a process each).
        self.eager_workers = eager_workers
        self.config = config
        self.webhook_policy = WebhookPolicy(config)  # which events the store records for each account
        self.store = store or open_store(url=config.store.url, path=config.store.path,
                                         synchronous=config.store.synchronous,
                                         event_filter=self.webhook_policy)
        self.tokens = TokenBook.load(config.data_dir, self._fixed_tokens(config))
        # Verification codes' real text is stored sealed under this key (not in the store) and opened
        # only when pushed to a device; every daemon of a shared store needs the same secret.key.
        self.sealer = Sealer(self.tokens.derived_key("sealed-text"))
        self.kinds = Kinds(self)
        # Every daemon on the store and the devices each holds (refreshed by _presence_loop).
        self.node = config.store.node or socket.gethostname()
        self._cluster: list[dict[str, Any]] = []
        self._presence_due = asyncio.Event()  # a device came or went: publish now
        self.dispatcher = Dispatcher(config=config, store=self.store, on_online=self._device_online,
                                     dialer_for=self._dialer_for, elsewhere=self._online_elsewhere,
                                     sealer=self.sealer)
        self.metrics = Metrics(self)
        self.listener = AgentListener(config=config, store=self.store, dispatcher=self.dispatcher,
                                      tokens=self.tokens, on_job_state=self.metrics.job_state,
                                      ssl=optional_server_context(config.agents.tls_cert, config.agents.tls_key))
        self.api = Api(config=config, jobs=self.store, records=self.store, codes=self.store, outbox=self.store,
                       tokens=self.store, on_enqueued=self.dispatcher.wake, daemon=self, metrics=self.metrics,
                       console=Console(ttl=config.console.session_ttl), sealer=self.sealer)
        self.notifier = Notifier()
        self._tg: asyncio.TaskGroup | None = None
        self.webhooks = WebhookDeliverer(config=config, store=self.store)
        self._runner: web.AppRunner | None = None
        self.ready = asyncio.Event()
        self.api_port: int | None = None
        self._store_fault: str | None = None  # as last seen by _store_watch_loop

    @staticmethod
    def _fixed_tokens(config: Config) -> dict[str, str]:
        return {d.id: d.token for d in config.devices if d.token}

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        # New or returned work (here, or from another daemon on a shared database) wakes the dispatcher.
        self.store.set_queue_listener(self._queue_changed)
        self.store.set_opt_out(Keywords(self.config.api.stop_words, self.config.api.start_words),
                               self.config.api.default_region)
        await self.listener.start()
        self.api.workers.start(eager=self.eager_workers)
        self._runner = web.AppRunner(self.api.app(), access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        host, port = self.config.api.listen
        site = web.TCPSite(self._runner, host, port, ssl_context=optional_server_context(
            self.config.api.tls_cert, self.config.api.tls_key))
        await site.start()
        self.api_port = self._runner.addresses[0][1]
        log.info("API on http://%s:%d, agents on ws://%s:%d, store %s", host, self.api_port,
                 *self.config.agents.listen[:1], self.listener.port,
                 describe(self.config.store.url, self.config.store.path))

    @property
    def agent_port(self) -> int:
        return self.listener.port

    def token_for(self, device_id: str) -> str:
        return self.tokens.token_for(device_id)

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
                self._tg = tg
                await self._apply_devices()
                tg.create_task(self.notifier.watchdog_loop(self.health_check))
                tg.create_task(self._presence_loop())
                tg.create_task(self._upkeep_loop())
                tg.create_task(self._store_watch_loop())
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

    async def _apply_devices(self) -> None:
        """Hand every kind the devices of that kind this daemon drives (at
        start and on reload); a kind first configured now is built and run."""
        wanted = by_kind(self.config.devices)
        for name in wanted:
            kind, new = self.kinds.ensure(name)
            if new:
                if isinstance(kind, OnlineWatcher):
                    for device_id in self.dispatcher.sessions:
                        kind.agent_connected(device_id, True)
                if self._tg is not None:
                    self._tg.create_task(supervise(f"{name} devices", kind.run))
        for kind in self.kinds:
            await kind.apply(wanted.get(kind.name, []))

    def _device_online(self, device_id: str, online: bool) -> None:
        """The dispatcher's word that a device's session came or went."""
        for kind in self.kinds:
            if isinstance(kind, OnlineWatcher):
                kind.agent_connected(device_id, online)
        self._notify_status()
        self._presence_due.set()

    def _dialer_for(self, kind_name: str) -> Callable[[str, str], Awaitable[None]] | None:
        kind = self.kinds.get(kind_name)
        return kind.dial if isinstance(kind, Dialer) else None

    def agent_client_ssl(self) -> Any:
        cert = self.config.agents.tls_cert
        return client_context(cert) if cert is not None and self.listener.ssl is not None else None

    # -- reload (SIGHUP) --------------------------------------------------------------

    RESTART_ONLY = (("api", "listen"), ("api", "bulk_worker"), ("api", "tls_cert"), ("api", "tls_key"),
                    ("agents", "listen"), ("agents", "tls_cert"), ("agents", "tls_key"), ("store", "path"),
                    ("store", "synchronous"), ("store", "url"), ("store", "node"))

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
        if self._tg is not None:
            await self._apply_devices()
        added = {d.id for d in config.devices} - {d.id for d in old.devices}
        removed = {d.id for d in old.devices} - {d.id for d in config.devices}
        log.info("configuration reloaded: %d account(s), %d device(s) (added: %s; removed: %s)",
                 len(config.accounts), len(config.devices), ", ".join(sorted(added)) or "none",
                 ", ".join(sorted(removed)) or "none")
        self.notifier.ready(self._status_line())

    # -- health, status, recheck -------------------------------------------------------

    async def health_check(self) -> None:
        """What the watchdog ping vouches for: the loop ran us and the store
        answers. A store that answers but takes no writes (disk full, file
        deleted, database out of reach) is not wedged: a restart would not
        give it room, and would lose a deleted file's content. The watchdog is
        still fed; the status line, /healthz and every refused write say why."""
        with contextlib.suppress(StoreUnavailable):
            await self.store.ping()

    STORE_CHECK_S = 1.0  # how often a store that takes no writes is asked whether it does again
    STORE_WATCH_S = 5.0  # how often a store that takes writes is asked, when nothing writes

    async def store_fault(self) -> str | None:
        """Why the store takes no writes now, or None (asks it: a full disk is
        tried again, a deleted file noticed)."""
        try:
            async with asyncio.timeout(10.0):
                await self.store.ping()
        except StoreUnavailable as exc:
            return str(exc)
        except TimeoutError:
            return "the store does not answer within 10 s"
        return None

    async def _store_watch_loop(self) -> None:
        """Notice a store fault (and its end) without traffic: log it, say it in the status line."""
        while True:
            fault = await self.store_fault()
            if fault != self._store_fault:
                if fault is not None:
                    log.error("the store takes no writes: %s; the API answers 503 until it does", fault)
                else:
                    log.warning("the store takes writes again")
                self._store_fault = fault
                self._notify_status()
            # A write that meets a fault is refused at once, and says why; this is for the status line.
            await asyncio.sleep(self.STORE_CHECK_S if fault is not None else self.STORE_WATCH_S)

    def _status_line(self) -> str:
        online = sum(1 for d in self.config.devices if d.id in self.dispatcher.sessions)
        line = (f"API on port {self.api_port}, agents on port {self.listener.port}; "
                f"{online}/{len(self.config.devices)} device(s) online")
        if self._store_fault is not None:
            return f"degraded: the store takes no writes ({self._store_fault}); refusing with 503; {line}"
        return f"serving: {line}"

    def _notify_status(self) -> None:
        if self.ready.is_set() and self.notifier.enabled:
            self.notifier.status(self._status_line())

    async def recheck(self, device_id: str) -> bool:
        """Close the device's session if its token was revoked (``simbridge pair --revoke``)."""
        return await self.listener.recheck(device_id)

    async def shutdown(self) -> None:
        # Take no more work first (the API), then let the agents go, then persist.
        if self._runner is not None:
            await self._runner.cleanup()
        for kind in self.kinds:
            await kind.aclose()
        await self.listener.stop()
        self.api.workers.close()
        await self.store.close()
        self.notifier.close()
        log.info("stopped")

    # -- operations -----------------------------------------------------------------

    async def simulate(self, account: AccountConfig, what: str, body: dict[str, Any]) -> dict[str, Any]:
        for kind in self.kinds:
            if isinstance(kind, Simulator):
                done = kind.simulate(account, what, body)
                if done is not None:
                    return done
        device = body.get("device")
        raise LookupError(f"no virtual device {device or ''} for account {account.login}".replace("  ", " "))

    def phones_online(self, login: str) -> bool:
        """Whether a connected device of the account can place calls (click-to-call)."""
        return any(s.hello.capabilities.calls for s in self.dispatcher.online(login) if not s.closed)

    # -- several daemons on one store ------------------------------------------------

    PRESENCE_INTERVAL_S = 2.0  # heartbeat; the other daemons' rows read
    PRESENCE_ROWS_S = 10.0  # the device rows that changed (a signal, a reason), unless one came or went
    PRESENCE_REFRESH_S = 60.0  # every row again (its last_seen), changed or not
    NODE_STALE_S = 10.0  # a daemon silent this long is taken for dead

    async def _presence_loop(self) -> None:
        """Publish this daemon's heartbeat and devices, read the other daemons'.
        A device's row is written when it changed, not each heartbeat: with 1,000
        devices, building, writing and reading back every row every 2 s was most
        of an idle daemon's CPU. A device that comes or goes is published at once."""
        published: dict[str, dict[str, Any]] = {}  # device id -> its row as last written
        refreshed = looked = -math.inf  # (monotonic) when every row was written; when rows were looked at
        while True:
            came_or_went = self._presence_due.is_set()
            self._presence_due.clear()
            try:
                now = time.monotonic()
                every = now - refreshed >= self.PRESENCE_REFRESH_S
                rows = None
                if came_or_went or every or now - looked >= self.PRESENCE_ROWS_S:
                    rows = self._local_rows(None)
                if rows is None:
                    changed = []
                elif every:
                    changed = rows
                else:
                    changed = [row for row in rows if _news(published.get(row["id"]), row)]
                await self.store.publish_presence(
                    self.node, [(row["id"], row["account"], row["state"] == "online", row) for row in changed],
                    api_url=f"http://{self.config.api.listen[0]}:{self.api_port}")
                if rows is not None:
                    published, looked = {row["id"]: row for row in rows}, now
                if every:
                    refreshed = now
                self._cluster = await self.store.presence(stale_after=self.NODE_STALE_S, other_than=self.node)
            except Exception as exc:  # noqa: BLE001 - the store may be away for a while; try again
                log.warning("presence not published: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.PRESENCE_INTERVAL_S):
                    await self._presence_due.wait()

    UPKEEP_INTERVAL_S = 5.0  # counters folded
    PURGE_INTERVAL_S = 60.0  # retention: a pass in small batches
    PURGE_BATCH = 500

    async def _upkeep_loop(self) -> None:
        """Off the hot path: fold the counters; purge what [store] keep_days
        no longer keeps, a small batch at a time, yielding between batches."""
        next_purge = time.monotonic() + self.UPKEEP_INTERVAL_S
        while True:
            await asyncio.sleep(self.UPKEEP_INTERVAL_S)
            try:
                await self.store.fold_counters()
                keep = self.config.store.keep_days
                if keep > 0 and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + self.PURGE_INTERVAL_S
                    cutoff, purged = time.time() - keep * 86400, 0
                    while (n := await self.store.purge(cutoff, limit=self.PURGE_BATCH)) > 0:
                        purged += n
                        await asyncio.sleep(0.05)
                    if purged:
                        log.info("retention: %d row(s) older than %g day(s) purged", purged, keep)
            except Exception as exc:  # noqa: BLE001 - the store may be away for a while; next time
                log.warning("store upkeep: %s", exc)

    def _queue_changed(self, account: str) -> None:
        """New or returned work: wake the dispatcher if one of our devices can send it."""
        self.dispatcher.queue_changed()
        if not account or self.dispatcher.online(account):
            self.dispatcher.wake()

    def _online_elsewhere(self, device_id: str) -> bool:
        if device_id in self.dispatcher.sessions:
            return False
        return any(r["device_id"] == device_id and r["online"] for r in self._cluster)

    def devices_view(self, account: AccountConfig | None) -> list[dict[str, Any]]:
        out = self._local_rows(account)
        for kind in self.kinds:
            out.extend(dict(row, node=self.node) for row in kind.extra_rows())
        # The devices other daemons on the store hold (each as that daemon last published it).
        mine = {row["id"] for row in out if row.get("state") == "online"}
        shown = {row["id"] for row in out}
        for r in self._cluster:
            if (account is not None and r["account"] != account.login) or r["device_id"] in mine:
                continue
            if r["device_id"] in shown and not r["online"]:
                continue
            row = dict(r["info"], node=r["node"])
            if not r["online"]:
                row.update(state="offline", reason=row.get("reason") if r["node_alive"] else
                           f"its daemon {r['node']} is silent")
            out = [o for o in out if o["id"] != r["device_id"]] + [row]
        return out

    def _local_rows(self, account: AccountConfig | None) -> list[dict[str, Any]]:
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
                # Online: when its agent was last heard (a ping, a status, events); else when it went.
                "last_seen": time.time() - (time.monotonic() - session.ws.heard) if session
                else health.last_seen if health else None,
                "in_flight": session.inflight if session else 0,
                "agent": health.agent if health else "",
                "delivery_reports": bool(health and health.capabilities and health.capabilities.delivery_reports),
            })
            kind = self.kinds.get(device.kind)
            setup = kind.setup(device.id) if kind is not None else None
            if setup is not None and not session:
                # Not connected: the set-up step it is at says more than "offline".
                out[-1].update(state=setup.state, reason=setup.reason, step=setup.step)
        for row in out:
            row["node"] = self.node
        return out


def _news(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether a device's row says more than when it was last published (its
    ``last_seen`` alone, moving with every frame its agent sends, waits for the refresh)."""
    if old is None or len(old) != len(new):
        return True
    return any(value != old.get(key) for key, value in new.items() if key != "last_seen")


class _Stop(Exception):
    pass


# A stop (SIGTERM) takes well under a second, busy or not (docs/operations.md); one that has not
# ended after this long is cut short, before the unit's TimeoutStopSec (30 s) would SIGKILL it.
STOP_DEADLINE_S = 20.0


def _stop_deadline(seconds: float) -> None:
    """Exit the process ``seconds`` from now unless it has ended by then:
    from a thread of its own, so that a stuck event loop cannot hold it.
    What was accepted is durable already; the children go with us."""
    def overdue() -> None:
        log.error("still stopping after %g s: exiting now", seconds)
        logging.shutdown()
        os._exit(1)
    timer = threading.Timer(seconds, overdue)
    timer.daemon = True
    timer.start()


def install_signal_handlers(stop: asyncio.Event, reload: Callable[[], None] | None = None, *,
                            deadline_s: float = STOP_DEADLINE_S) -> None:
    """SIGTERM/SIGINT set ``stop`` (and the process exits at the latest
    ``deadline_s`` later); SIGHUP calls ``reload`` (when given)."""
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if not stop.is_set():
            _stop_deadline(deadline_s)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_stop)
    if reload is not None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, reload)
