"""Android phones on USB: follow the adb server, set each configured phone up,
and run its in-daemon agent while it is plugged in.

Steps of one phone, each shown with a state and a sentence by ``simbridge
devices`` / ``doctor`` until the phone is online:

=============  =========================================================================
step           what is done / checked
=============  =========================================================================
usb            the phone is plugged in and seen by ``adb devices``
authorised     USB debugging allowed on the phone ("Allow USB debugging?")
inbox          ``content query`` on the SMS inbox and call log works (shell user)
tuning         battery optimisation and (Termux) the phantom-process killer, where the shell may
app            the route's app installed and answering (SMS Gateway's local server; Termux)
permissions    the app's SMS permissions granted (``pm grant``, checked with ``dumpsys package``)
helper         (termux) the helper started once in Termux and polling the bridge
ready          set up; its session connects (then: online)
=============  =========================================================================

Incoming SMS and calls are read from the ``inbox`` step on, whatever the
route's state: they wait in the agent's journal until its session connects.
Unplugging stops the agent (its session goes offline); plugging in again runs
the steps again and resumes from the remembered position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import adbutils

from bridge.config import DeviceConfig
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime

from . import adb
from .adb import Client, Phone
from .content import ContentError, Position
from .limits import ANDROID_CHECK_PERIOD_S, ANDROID_MAX_COUNT, PartsWindow
from .phone import DialError, PhoneBackend, Reader, dial
from .routes import Route, SmsGateRoute, TermuxRoute, tune
from .steps import ABSENT, ERROR, NEEDS_USER, ONLINE, SETTING_UP, STARTING, DeviceSetup, Step

log = logging.getLogger(__name__)

AGENT_NAME = "simbridge-android-adb/2"


class Settings:
    """What every phone's unit needs from the daemon (plain values and callables)."""

    def __init__(self, *, data_dir: Path, agent_url: Callable[[], str], token_for: Callable[[str], str],
                 agent_ssl: Callable[[], Any], poll_interval: float = 2.0, confirm_timeout: float = 120.0,
                 recheck: float | None = None, window: int = 4) -> None:
        self.data_dir = data_dir
        self.agent_url = agent_url
        self.token_for = token_for
        self.agent_ssl = agent_ssl
        self.poll_interval = poll_interval
        self.confirm_timeout = confirm_timeout
        self.recheck = recheck if recheck is not None else max(1.0, 2 * poll_interval)
        self.window = window


def make_route(device: DeviceConfig, settings: Settings) -> Route:
    o = device.options
    slot = o.get("sim_slot")
    if o.get("route", "smsgate") == "termux":
        return TermuxRoute(device_id=device.id, options=o, token=settings.token_for(device.id), sim_slot=slot,
                           confirm_timeout=settings.confirm_timeout, helper_wait=settings.recheck,
                           poll=min(1.0, settings.poll_interval))
    from .termux import derive
    return SmsGateRoute(device_id=device.id, options=o, secret=derive(settings.token_for(device.id), "webhook"),
                        sim_slot=slot, poll_interval=max(2.0, 5 * settings.poll_interval))


class PhoneUnit:
    """One configured phone: its route, its remembered position, its set-up state."""

    def __init__(self, device: DeviceConfig, settings: Settings, client: Client,
                 on_change: Callable[[DeviceSetup], None] | None = None) -> None:
        self.device = device
        self.device_id = device.id
        self.serial = str(device.options["serial"])
        self.settings = settings
        self.client = client
        self.on_change = on_change
        self.route = make_route(device, settings)
        self.window = PartsWindow(int(device.options.get("sms_max_count", ANDROID_MAX_COUNT)),
                                  float(device.options.get("sms_check_interval", ANDROID_CHECK_PERIOD_S)))
        self.position = Position(settings.data_dir / f"android-{device.id}-position.json")
        self.setup = DeviceSetup(device.id, self.serial, ABSENT, "usb",
                                 f"not plugged in (looking for serial {self.serial})", time.time())
        self.adb_state: str | None = None
        self.connected = False
        self.task: asyncio.Task[None] | None = None
        self.phone: Phone | None = None
        self.log = logging.LoggerAdapter(log, {"device": device.id})

    def set(self, state: str, step: str, reason: str, notes: tuple[str, ...] | None = None) -> None:
        old = self.setup
        notes = old.notes if notes is None else notes
        if (old.state, old.step, old.reason, old.notes) == (state, step, reason, notes):
            return
        self.setup = DeviceSetup(self.device_id, self.serial, state, step, reason, time.time(), notes)
        level = logging.WARNING if state in (ERROR, NEEDS_USER) else logging.INFO
        self.log.log(level, "%s (%s): %s — %s", self.device_id, self.serial, state, reason)
        if self.on_change is not None:
            try:
                self.on_change(self.setup)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop set-up
                self.log.exception("on_change callback failed")

    def agent_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self.set(ONLINE, "ready", "connected")
        elif self.adb_state == "device":
            self.set(STARTING, "ready", "set up; its session reconnects")

    # -- while plugged in ------------------------------------------------------------

    async def run_plugged(self) -> None:
        """Set up and run until cancelled (unplugged); failures retried with backoff."""
        delay = 1.0
        while True:
            try:
                await self._plugged_once()
            except asyncio.CancelledError:
                raise
            except (adbutils.AdbError, OSError, ContentError) as exc:
                self.set(ERROR, self.setup.step, f"{type(exc).__name__}: {exc}; retrying")
            except Exception as exc:  # noqa: BLE001 - set-up failures are retried
                self.log.exception("%s: set-up failed", self.device_id)
                self.set(ERROR, self.setup.step, f"{type(exc).__name__}: {exc}; retrying")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    async def _plugged_once(self) -> None:
        s = self.settings
        phone = self.phone = Phone(self.client, self.serial)
        self.set(SETTING_UP, "inbox", "reading the SMS inbox and call log over adb")
        timezone = (await phone.getprop("persist.sys.timezone")) or None
        backend = PhoneBackend(route=self.route, window=self.window, device_id=self.device_id)
        backend.phone = phone
        journal = Journal(s.data_dir / f"android-{self.device_id}-journal.jsonl")
        runtime = AgentRuntime(url=s.agent_url(), device_id=self.device_id, token=s.token_for(self.device_id),
                               backend=backend, journal=journal, agent_name=AGENT_NAME, window=s.window,
                               workers=s.window, timezone=timezone, ssl=s.agent_ssl(), backoff_max=5.0)
        self.route.attach(runtime.report)
        reader = Reader(self.position, runtime.try_emit)
        try:
            await reader.prime(phone)
            await reader.poll(phone)
            self.set(SETTING_UP, "tuning", "battery optimisation and background limits")
            notes = tuple(await tune(phone, self.route.package, phantom=self.route.name == "termux"))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(reader, phone))
                tg.create_task(self._status_loop(backend, phone, timezone))
                await self._prepare(phone, notes)
                self.set(ONLINE if self.connected else STARTING, "ready",
                         "connected" if self.connected else "set up; its session is connecting", notes)
                tg.create_task(runtime.run())
                tg.create_task(self._watch_route(phone, notes))
        finally:
            await runtime.aclose()

    async def _prepare(self, phone: Phone, notes: tuple[str, ...]) -> None:
        self.set(SETTING_UP, "app", f"checking the {self.route.name} route", notes)
        while True:
            # A step waiting for the person stays on show while it is checked again.
            step: Step | None = await self.route.prepare(phone)
            if step is None:
                return
            self.set(step.state, step.step, step.reason, notes)
            await asyncio.sleep(self.settings.recheck)

    async def _watch_route(self, phone: Phone, notes: tuple[str, ...]) -> None:
        """A route that stops working while connected (helper gone, permission
        revoked) is set up again; its step is logged and listed meanwhile."""
        while True:
            await asyncio.sleep(self.settings.recheck)
            ready = getattr(self.route, "ready", True)
            if not ready:
                step = await self.route.prepare(phone)
                if step is not None:
                    self.set(step.state, step.step, step.reason, notes)
                else:
                    self.agent_connected(self.connected)

    async def _read_loop(self, reader: Reader, phone: Phone) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await reader.poll(phone)
                failures = 0
            except (adbutils.AdbError, ContentError, OSError) as exc:
                failures += 1
                self.log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                             "%s: reading the inbox failed: %s", self.device_id, exc)

    async def _status_loop(self, backend: PhoneBackend, phone: Phone, timezone: str | None) -> None:
        while True:
            with contextlib.suppress(adbutils.AdbError, OSError, ValueError):
                await backend.refresh_status(phone, timezone)
            await asyncio.sleep(30.0)


class AndroidSupervisor:
    """Follows the adb server and runs one :class:`PhoneUnit` per configured phone."""

    def __init__(self, *, devices: Iterable[DeviceConfig], settings: Settings, adb_host: str = "127.0.0.1",
                 adb_port: int = 5037, start_adb_server: bool | None = None, backoff_max: float = 30.0,
                 list_interval: float = 2.0, on_change: Callable[[DeviceSetup], None] | None = None) -> None:
        self.list_interval = list_interval
        self.adb_host = adb_host
        self.adb_port = adb_port
        self.start_adb_server = (adb_host in ("127.0.0.1", "localhost", "::1")
                                 if start_adb_server is None else start_adb_server)
        self.backoff_max = backoff_max
        self.client = Client(host=adb_host, port=adb_port, socket_timeout=30)
        self.units: dict[str, PhoneUnit] = {}  # by serial
        self.by_id: dict[str, PhoneUnit] = {}
        self._unconfigured: dict[str, str] = {}
        self._tracker: adbutils.AdbConnection | None = None
        self._adb_server: asyncio.subprocess.Process | None = None  # the local adb server we started
        for device in devices:
            if not device.options.get("serial"):
                raise ValueError(f"device {device.id!r}: kind = \"android\" needs serial = \"…\" (see `adb devices`)")
            unit = PhoneUnit(device, settings, self.client, on_change)
            self.units[unit.serial] = unit
            self.by_id[device.id] = unit

    def states(self) -> dict[str, DeviceSetup]:
        return {u.device_id: u.setup for u in self.units.values()}

    def unconfigured(self) -> list[str]:
        return sorted(self._unconfigured)

    def agent_connected(self, device_id: str, connected: bool) -> None:
        unit = self.by_id.get(device_id)
        if unit is not None:
            unit.agent_connected(connected)

    async def dial(self, device_id: str, number: str) -> None:
        unit = self.by_id.get(device_id)
        if unit is None:
            raise DialError(f"no android device {device_id!r}")
        if unit.adb_state != "device" or unit.phone is None:
            raise DialError(f"{device_id}: phone not reachable over USB ({unit.setup.reason})")
        await dial(unit.phone, number)

    async def run(self) -> None:
        delay = 0.5
        failures = 0
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._track()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - adb server gone: retry
                    failures += 1
                    log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                            "adb server at %s:%d unreachable (%s); retrying", self.adb_host, self.adb_port, exc)
                    self._update({}, lost=f"adb server at {self.adb_host}:{self.adb_port} unreachable "
                                          f"({type(exc).__name__}: {exc}); retrying")
                if time.monotonic() - started > 10:
                    delay, failures = 0.5, 0
                if self.start_adb_server and failures and (self._adb_server is None
                                                           or self._adb_server.returncode is not None):
                    try:
                        self._adb_server = await adb.start_server(self.adb_port)
                    except OSError as exc:
                        log.debug("adb server not started: %s", exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max)
        finally:
            self._close_tracker()
            tasks = [u.task for u in self.units.values() if u.task]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for unit in self.units.values():
                unit.task = None
                await unit.route.aclose()
            server, self._adb_server = self._adb_server, None
            await adb.stop_server(server)

    def _close_tracker(self) -> None:
        conn, self._tracker = self._tracker, None
        if conn is not None:
            with contextlib.suppress(OSError, adbutils.AdbError):
                conn.conn.shutdown(2)
            with contextlib.suppress(OSError, adbutils.AdbError):
                conn.close()

    async def _track(self) -> None:
        """``host:track-devices`` for changes as they come, and ``host:devices``
        every ``list_interval``: the adb server does not announce every change
        (Debian's adb 29 keeps quiet when a TCP transport goes offline)."""
        conn = await asyncio.to_thread(adb.track, self.client)
        self._tracker = conn
        log.info("following adb server at %s:%d", self.adb_host, self.adb_port)

        async def listen() -> None:
            while True:
                text = await asyncio.to_thread(conn.read_string_block)
                self._update(adb.parse_devices(text))

        async def poll() -> None:
            while True:
                await asyncio.sleep(self.list_interval)
                infos = await asyncio.to_thread(self.client.list)
                self._update({i.serial: i.state for i in infos})

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(listen())
                tg.create_task(poll())
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        finally:
            self._close_tracker()

    def _update(self, devices: dict[str, str], lost: str | None = None) -> None:
        self._unconfigured = {s: st for s, st in devices.items() if s not in self.units}
        for unit in self.units.values():
            state = devices.get(unit.serial)
            if state == unit.adb_state and lost is None:
                continue
            unit.adb_state = state
            if unit.task is not None:
                unit.task.cancel()
                unit.task = None
                unit.phone = None
            if lost is not None:
                unit.set(ERROR, "usb", lost)
            elif state is None:
                unit.set(ABSENT, "usb", f"not plugged in (looking for serial {unit.serial})")
            elif state == "unauthorized":
                unit.set(NEEDS_USER, "authorised",
                         "USB debugging is not authorised: unlock the phone and tap \"Allow\" on the "
                         "\"Allow USB debugging?\" prompt (tick \"Always allow from this computer\")")
            elif state == "device":
                unit.set(SETTING_UP, "authorised", "USB debugging authorised; setting up")
                unit.task = asyncio.get_running_loop().create_task(unit.run_plugged(),
                                                                   name=f"android:{unit.device_id}")
            else:
                unit.set(NEEDS_USER, "usb", f"adb sees the phone as {state!r}: unplug it and plug it in "
                                            f"again, with the screen unlocked")
