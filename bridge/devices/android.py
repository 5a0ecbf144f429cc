"""Android phones over USB: discovery with adb, set-up step by step, dialling.

:class:`AndroidSupervisor` follows the adb server's device list
(``host:track-devices``), matches phones to the ``[[devices]] kind =
"android"`` entries by serial (a phone nobody configured is listed as
unconfigured and left alone), and walks each configured phone through its
set-up, every step with a state and a sentence for a human:

=============  =================================================================
step           what is done / checked
=============  =================================================================
usb            the phone is plugged in and seen by adb
authorised     USB debugging allowed on the phone ("Allow USB debugging?")
termux         Termux and Termux:API installed (F-Droid)
permissions    ``pm grant com.termux.api`` SEND_SMS, RECEIVE_SMS, READ_SMS,
               READ_CALL_LOG, READ_PHONE_STATE, CALL_PHONE
reverse        ``adb reverse tcp:<device port> tcp:<agent port>``
push           the agent archive and its config pushed to the phone
start          the agent started through Termux's RUN_COMMAND intent
connected      the agent holds its websocket (the daemon says so)
=============  =================================================================

Unplugging and replugging runs the set-up again by itself; an agent that is
already running on the phone stays (the new start is a no-op) and reconnects
through the new ``adb reverse``. A lost adb server is reconnected (and, when
local, restarted) with capped exponential backoff.

All adbutils calls block: they run in threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adbutils

from bridge.config import DeviceConfig
from bridge.devices.base import DeviceHost, SetupView, supervise

log = logging.getLogger(__name__)

TERMUX = "com.termux"
TERMUX_API = "com.termux.api"
TERMUX_PYTHON = "/data/data/com.termux/files/usr/bin/python"
RUN_COMMAND_SERVICE = "com.termux/com.termux.app.RunCommandService"
PERMISSIONS = ("SEND_SMS", "RECEIVE_SMS", "READ_SMS", "READ_CALL_LOG", "READ_PHONE_STATE",
               "CALL_PHONE")
FDROID = {TERMUX: "https://f-droid.org/packages/com.termux/",
          TERMUX_API: "https://f-droid.org/packages/com.termux.api/"}
NAMES = {TERMUX: "Termux", TERMUX_API: "Termux:API"}

STEPS = ("usb", "authorised", "termux", "permissions", "reverse", "push", "start", "connected")

# Device set-up states, as `simbridge devices` shows them.
ABSENT = "absent"  # configured, not plugged in
SETTING_UP = "setting_up"  # steps running
NEEDS_USER = "needs_user"  # waiting for the person with the phone (reason says what to do)
STARTING = "starting"  # agent started, not connected yet
ONLINE = "online"  # agent connected
ERROR = "error"  # something failed; retried with backoff

_DIALABLE = re.compile(r"^\+?[0-9*#]{2,32}$")


class DialError(Exception):
    """The phone could not place the call (unplugged, not set up, refused)."""


@dataclass(frozen=True, slots=True)
class DeviceSetup:
    """Where one configured phone stands."""
    device_id: str
    serial: str
    state: str
    step: str  # the step reached, or the one that is blocked
    reason: str  # a sentence for the person with the phone
    since: float = 0.0
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "serial": self.serial, "state": self.state,
                "step": self.step, "reason": self.reason, "since": self.since, "model": self.model}


class _Connection(adbutils.AdbConnection):
    """adbutils' connection, minus its habit of spawning ``adb start-server``
    whenever a connect fails: restarting the server is the supervisor's call."""

    def _safe_connect(self):  # type: ignore[override]
        return self._create_socket()


class _Client(adbutils.AdbClient):
    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        conn = _Connection(self.host, self.port)
        if timeout:
            conn.conn.settimeout(timeout)
        return conn


def _option(device: Any, key: str, default: Any = None) -> Any:
    """A key of a device config: attribute, ``options`` entry, or dict key."""
    if isinstance(device, dict):
        return device.get(key, (device.get("options") or {}).get(key, default))
    value = getattr(device, key, None)
    if value is not None:
        return value
    options = getattr(device, "options", None) or {}
    return options.get(key, default)


def mask_number(number: str) -> str:
    return number[:4] + "****" + number[-4:] if len(number) > 8 else "****"


def default_archive_builder() -> Path:
    from device_agents.android.build import build_archive
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path(tempfile.gettempdir()) / f"simbridge-{os.getuid()}")
    return build_archive(cache / "simbridge-agent.pyz")


@dataclass
class _Phone:
    device_id: str
    serial: str
    sim_slot: int | None
    options: dict[str, Any]
    setup: DeviceSetup
    adb_state: str | None = None  # device | unauthorized | offline | … ; None: not plugged
    task: asyncio.Task[None] | None = None
    connected: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class AndroidSupervisor:
    """Finds, sets up and watches the configured Android phones.

    ``devices``: the config's device entries (``kind == "android"`` ones are
    used; each needs ``serial``, optional ``sim_slot``, read as attributes,
    from ``options`` or as dict keys). ``token_for(device_id)`` gives the
    token the agent must present. ``agent_port`` is the bridge's agent
    listener port on this machine; ``device_port`` the port the agent dials
    on the phone's loopback (default: the same number).
    """

    def __init__(self, *, devices: Iterable[Any], token_for: Callable[[str], str], agent_port: int,
                 adb_host: str = "127.0.0.1", adb_port: int = 5037,
                 archive_builder: Callable[[], str | os.PathLike[str]] = default_archive_builder,
                 device_port: int | None = None, remote_dir: str = "/data/local/tmp/simbridge",
                 start_adb_server: bool | None = None, agent_options: dict[str, Any] | None = None,
                 connect_timeout: float = 60.0, backoff_max: float = 30.0,
                 on_change: Callable[[DeviceSetup], None] | None = None) -> None:
        self.token_for = token_for
        self.agent_port = agent_port
        self.device_port = device_port or agent_port
        self.adb_host = adb_host
        self.adb_port = adb_port
        self.archive_builder = archive_builder
        self.remote_dir = remote_dir.rstrip("/")
        self.start_adb_server = (adb_host in ("127.0.0.1", "localhost", "::1")
                                 if start_adb_server is None else start_adb_server)
        self.agent_options = dict(agent_options or {})
        self.connect_timeout = connect_timeout
        self.backoff_max = backoff_max
        self.on_change = on_change
        self.client = _Client(host=adb_host, port=adb_port, socket_timeout=30)
        self._phones: dict[str, _Phone] = {}  # by serial
        self._by_id: dict[str, _Phone] = {}
        self._unconfigured: dict[str, str] = {}  # serial -> adb state
        self._archive: Path | None = None
        self._tracker_conn: adbutils.AdbConnection | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        now = time.time()
        for dev in devices:
            if _option(dev, "kind") != "android":
                continue
            device_id = str(_option(dev, "id"))
            serial = _option(dev, "serial")
            if not serial:
                raise ValueError(f"device {device_id!r}: kind = \"android\" needs serial = \"…\" "
                                 f"(see `adb devices`)")
            options = dict(_option(dev, "options", {}) or {})
            phone = _Phone(device_id=device_id, serial=str(serial),
                           sim_slot=_option(dev, "sim_slot"), options=options,
                           setup=DeviceSetup(device_id, str(serial), ABSENT, "usb",
                                             f"not plugged in (looking for serial {serial})", now))
            self._phones[phone.serial] = phone
            self._by_id[device_id] = phone

    # -- public surface --------------------------------------------------------

    def states(self) -> dict[str, DeviceSetup]:
        return {p.device_id: p.setup for p in self._phones.values()}

    def unconfigured(self) -> list[str]:
        """Serials of plugged phones that no ``[[devices]]`` entry names."""
        return sorted(self._unconfigured)

    def agent_connected(self, device_id: str, connected: bool) -> None:
        """The daemon's word that the phone's agent (dis)connected."""
        phone = self._by_id.get(device_id)
        if phone is None:
            return
        phone.connected = connected
        phone.wake.set()
        if connected:
            self._set(phone, ONLINE, "connected", "agent connected")
            if phone.adb_state == "device":
                self._spawn_cleanup(phone)
        elif phone.adb_state == "device":
            self._set(phone, STARTING, "connected",
                      "agent disconnected; it reconnects by itself through adb reverse")
        else:
            self._set(phone, ABSENT, "usb", f"not plugged in (looking for serial {phone.serial})")

    async def dial(self, device_id: str, number: str) -> None:
        """Place a call from the phone (``am start -a android.intent.action.CALL``).

        Works while the phone is locked and Termux is in the background. The
        call shows up in the phone's call log, which the agent reports as an
        outgoing ``call_event``.
        """
        phone = self._by_id.get(device_id)
        if phone is None:
            raise DialError(f"no android device {device_id!r}")
        if phone.adb_state != "device":
            raise DialError(f"{device_id}: phone not reachable over USB ({phone.setup.reason})")
        number = number.replace(" ", "")
        if not _DIALABLE.match(number):
            raise DialError(f"{device_id}: not a dialable number")
        uri = "tel:" + number.replace("#", "%23")
        device = self.client.device(phone.serial)
        result = await asyncio.to_thread(
            device.shell2, ["am", "start", "-a", "android.intent.action.CALL", "-d", uri], 30)
        if result.returncode != 0 or "Error" in result.output or "Exception" in result.output:
            raise DialError(f"{device_id}: the phone refused the call: {result.output.strip()[:200]}")
        logging.LoggerAdapter(log, {"device": device_id}).info(
            "%s: dialling %s", device_id, mask_number(number))

    async def run(self) -> None:
        """Follow the adb server until cancelled."""
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
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "adb server at %s:%d unreachable (%s); retrying",
                            self.adb_host, self.adb_port, exc)
                    self._adb_lost(f"adb server at {self.adb_host}:{self.adb_port} unreachable "
                                   f"({type(exc).__name__}: {exc}); retrying")
                if time.monotonic() - started > 10:
                    delay, failures = 0.5, 0
                if self.start_adb_server and failures:
                    await self._start_adb_server()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max)
        finally:
            self._close_tracker()
            tasks = [p.task for p in self._phones.values() if p.task]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- tracking ---------------------------------------------------------------

    def _close_tracker(self) -> None:
        conn, self._tracker_conn = self._tracker_conn, None
        if conn is not None:
            with contextlib.suppress(OSError, adbutils.AdbError):
                conn.conn.shutdown(2)
            with contextlib.suppress(OSError, adbutils.AdbError):
                conn.close()

    def _open_tracker(self) -> adbutils.AdbConnection:
        conn = self.client.make_connection()
        conn.conn.settimeout(None)
        conn.send_command("host:track-devices")
        conn.check_okay()
        return conn

    async def _track(self) -> None:
        conn = await asyncio.to_thread(self._open_tracker)
        self._tracker_conn = conn
        log.info("following adb server at %s:%d", self.adb_host, self.adb_port)
        try:
            while True:
                text = await asyncio.to_thread(conn.read_string_block)
                devices = {}
                for line in text.splitlines():
                    serial, _, state = line.strip().partition("\t")
                    if serial:
                        devices[serial] = state.strip()
                self._update(devices)
        finally:
            self._close_tracker()

    def _update(self, devices: dict[str, str]) -> None:
        self._unconfigured = {s: st for s, st in devices.items() if s not in self._phones}
        for serial in self._unconfigured:
            log.debug("phone %s is plugged in but not configured; left alone", serial)
        for phone in self._phones.values():
            state = devices.get(phone.serial)
            if state == phone.adb_state:
                continue
            phone.adb_state = state
            if phone.task is not None:
                phone.task.cancel()
                phone.task = None
            if state is None:
                reason = ("unplugged; the agent reconnects when it is plugged in again"
                          if phone.connected else f"not plugged in (looking for serial {phone.serial})")
                self._set(phone, ABSENT, "usb", reason)
            elif state == "unauthorized":
                self._set(phone, NEEDS_USER, "authorised",
                          "USB debugging is not authorised: unlock the phone and tap \"Allow\" on the "
                          "\"Allow USB debugging?\" prompt (tick \"Always allow from this computer\")")
            elif state == "device":
                self._set(phone, SETTING_UP, "authorised", "USB debugging authorised; setting up")
                phone.task = asyncio.create_task(self._setup_loop(phone),
                                                 name=f"android-setup-{phone.device_id}")
            else:
                self._set(phone, NEEDS_USER, "usb",
                          f"adb sees the phone as {state!r}: unplug it and plug it in again, "
                          f"with the screen unlocked")

    def _adb_lost(self, reason: str) -> None:
        self._unconfigured = {}
        for phone in self._phones.values():
            if phone.task is not None:
                phone.task.cancel()
                phone.task = None
            phone.adb_state = None
            if phone.setup.state != ERROR or phone.setup.reason != reason:
                self._set(phone, ERROR, "usb", reason)

    async def _start_adb_server(self) -> None:
        def start() -> None:
            env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(self.adb_port))
            subprocess.run([adbutils.adb_path(), "start-server"], env=env, timeout=20,
                           stdin=subprocess.DEVNULL, capture_output=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(start)

    # -- set-up ---------------------------------------------------------------------

    def _set(self, phone: _Phone, state: str, step: str, reason: str) -> None:
        if state == SETTING_UP and phone.connected:
            return  # steps re-run under a connected agent (replug) change nothing it can see
        old = phone.setup
        if (old.state, old.step, old.reason) == (state, step, reason):
            return
        phone.setup = DeviceSetup(phone.device_id, phone.serial, state, step, reason, time.time(),
                                  old.model)
        level = logging.WARNING if state in (ERROR, NEEDS_USER) else logging.INFO
        log.log(level, "%s (%s): %s — %s", phone.device_id, phone.serial, state, reason)
        if self.on_change is not None:
            try:
                self.on_change(phone.setup)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop set-up
                log.exception("on_change callback failed")

    async def _setup_loop(self, phone: _Phone) -> None:
        delay = 1.0
        while True:
            try:
                done = await self._setup(phone)
            except asyncio.CancelledError:
                raise
            except adbutils.AdbError as exc:
                self._set(phone, ERROR, phone.setup.step, f"adb: {exc}; retrying")
                done = False
            except Exception as exc:  # noqa: BLE001 - set-up failures are retried
                log.exception("%s: set-up failed", phone.device_id)
                self._set(phone, ERROR, phone.setup.step, f"{type(exc).__name__}: {exc}; retrying")
                done = False
            if done:
                if await self._wait_for(phone, lambda: phone.connected, self.connect_timeout):
                    await self._wait_for(phone, lambda: not phone.connected, None)
                    # Dropped while plugged in: run the steps again (all idempotent;
                    # the start is a no-op if the agent still runs) and wait anew.
                    delay = 1.0
                    continue
                self._set(phone, NEEDS_USER, "start",
                          f"the agent did not connect within {self.connect_timeout:g} s. In Termux, "
                          f"check that ~/.termux/termux.properties has allow-external-apps = true "
                          f"(then run termux-reload-settings), that Termux's Python is installed "
                          f"(pkg install python), and see ~/.simbridge/agent.log; retrying")
                delay = 1.0
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max)

    @staticmethod
    async def _wait_for(phone: _Phone, condition: Callable[[], bool], timeout: float | None) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not condition():
                    await phone.wake.wait()
                    phone.wake.clear()
        return condition()

    def _shell(self, device: adbutils.AdbDevice, argv: list[str]) -> Any:
        return device.shell2(argv, timeout=60)

    async def _setup(self, phone: _Phone) -> bool:
        """One pass over the steps; True when the agent has been started."""
        device = self.client.device(phone.serial)
        ids = phone.device_id

        self._set(phone, SETTING_UP, "termux", "checking that Termux and Termux:API are installed")
        packages = set(await asyncio.to_thread(device.list_packages))
        missing = [p for p in (TERMUX, TERMUX_API) if p not in packages]
        if missing:
            what = " and ".join(f"{NAMES[p]} ({p}, {FDROID[p]})" for p in missing)
            self._set(phone, NEEDS_USER, "termux",
                      f"install {what} from F-Droid — not the Google Play builds, which are "
                      f"outdated — then open Termux once and run: pkg install python termux-api")
            return False

        self._set(phone, SETTING_UP, "permissions", "granting Termux:API its SMS, call and phone permissions")
        refused = []
        for name in PERMISSIONS:
            result = await asyncio.to_thread(
                self._shell, device, ["pm", "grant", TERMUX_API, f"android.permission.{name}"])
            if result.returncode != 0:
                refused.append(f"{name}: {result.output.strip().splitlines()[-1] if result.output.strip() else result.returncode}")
        if refused:
            self._set(phone, NEEDS_USER, "permissions",
                      "Android refused to grant Termux:API " + "; ".join(refused) +
                      ". Grant them by hand: Settings → Apps → Termux:API → Permissions (SMS, Phone, "
                      "Call logs)")
            return False

        self._set(phone, SETTING_UP, "reverse",
                  f"adb reverse tcp:{self.device_port} tcp:{self.agent_port}")
        await asyncio.to_thread(device.reverse, f"tcp:{self.device_port}", f"tcp:{self.agent_port}")

        self._set(phone, SETTING_UP, "push", "pushing the agent and its configuration")
        if self._archive is None:
            self._archive = Path(await asyncio.to_thread(self.archive_builder))
        timezone = (await asyncio.to_thread(self._shell, device, ["getprop", "persist.sys.timezone"])
                    ).output.strip() or None
        remote_dir = str(phone.options.get("remote_dir") or self.remote_dir).rstrip("/")
        archive_remote = f"{remote_dir}/simbridge-agent.pyz"
        config_remote = f"{remote_dir}/{ids}.json"
        config = {**self.agent_options, "device_id": ids, "token": self.token_for(ids),
                  "url": f"ws://127.0.0.1:{self.device_port}", "timezone": timezone}
        if phone.sim_slot is not None:
            config["sim_slot"] = int(phone.sim_slot)
        await asyncio.to_thread(self._shell, device, ["mkdir", "-p", remote_dir])
        await asyncio.to_thread(device.sync.push, str(self._archive), archive_remote, 0o644)
        await asyncio.to_thread(device.sync.push, json.dumps(config).encode(), config_remote, 0o644)

        self._set(phone, SETTING_UP, "start", "starting the agent through Termux's RUN_COMMAND intent")
        args = ",".join(a.replace(",", "\\,")
                        for a in (archive_remote, "--config", config_remote, "--device", ids))
        result = await asyncio.to_thread(self._shell, device, [
            "am", "startservice", "--user", "0", "-n", RUN_COMMAND_SERVICE,
            "-a", "com.termux.RUN_COMMAND",
            "--es", "com.termux.RUN_COMMAND_PATH", TERMUX_PYTHON,
            "--esa", "com.termux.RUN_COMMAND_ARGUMENTS", args,
            "--es", "com.termux.RUN_COMMAND_WORKDIR", "/data/data/com.termux/files/home",
            "--ez", "com.termux.RUN_COMMAND_BACKGROUND", "true"])
        output = result.output.strip()
        if result.returncode != 0 or "Error" in output or "Exception" in output:
            hint = ""
            if "RUN_COMMAND" in output and "permission" in output.lower():
                hint = (" — this phone does not let adb send Termux's RUN_COMMAND intent; start the "
                        f"agent once by hand in Termux: python {archive_remote} --config {config_remote}")
            self._set(phone, NEEDS_USER if hint else ERROR, "start",
                      f"could not start the agent: {output[:300] or result.returncode}{hint}")
            return False
        if phone.connected:
            self._set(phone, ONLINE, "connected", "agent connected")
        else:
            self._set(phone, STARTING, "connected",
                      "agent started; waiting for it to connect (needs allow-external-apps = true in "
                      "~/.termux/termux.properties)")
        return True

    def _spawn_cleanup(self, phone: _Phone) -> None:
        """The agent keeps a private copy of its config: remove the pushed one
        (it holds the device token) from the shared directory."""
        remote_dir = str(phone.options.get("remote_dir") or self.remote_dir).rstrip("/")

        async def cleanup() -> None:
            with contextlib.suppress(Exception):
                device = self.client.device(phone.serial)
                await asyncio.to_thread(self._shell, device,
                                        ["rm", "-f", f"{remote_dir}/{phone.device_id}.json"])

        task = asyncio.get_running_loop().create_task(cleanup())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)


class AndroidKind:
    """Android phones on this box's USB: found with adb, set up, their agent
    started; the bridge places their calls through adb. Phones whose agent
    runs elsewhere (``standalone``) only connect to us."""

    name = "android"

    def __init__(self, host: DeviceHost) -> None:
        self.host = host
        self.supervisor: AndroidSupervisor | None = None
        self._devices: tuple[DeviceConfig, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._online: set[str] = set()

    def _supervisor(self, devices: Sequence[DeviceConfig]) -> AndroidSupervisor:
        a = self.host.config.android
        return AndroidSupervisor(
            devices=devices, token_for=self.host.token_for, agent_port=self.host.agent_port,
            adb_host=a.adb_server[0], adb_port=a.adb_server[1], device_port=a.device_port,
            start_adb_server=a.start_adb_server,
            agent_options={"poll_interval": a.poll_interval, "confirm_timeout": a.confirm_timeout})

    async def apply(self, devices: Sequence[DeviceConfig]) -> None:
        """A new supervisor takes over when the phones change; agents already
        running on phones keep their sessions, and the set-up steps it runs
        again on plugged phones change nothing that is in place."""
        if tuple(devices) == self._devices and (self.supervisor is not None or not devices):
            return
        self._devices = tuple(devices)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
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
        return SetupView(state.state, state.step, state.reason) if state is not None else None

    def extra_rows(self) -> list[dict[str, Any]]:
        if self.supervisor is None:
            return []
        return [{"id": None, "serial": serial, "kind": "android", "account": None,
                 "state": "unconfigured", "signal": None, "battery": None, "last_seen": None,
                 "reason": f"phone {serial} is plugged in but no [[devices]] entry has "
                           f"serial = \"{serial}\"; it is left alone"}
                for serial in self.supervisor.unconfigured()]
