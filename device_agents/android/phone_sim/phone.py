"""The virtual phone: adbd on a TCP port, its shell, its state, its apps.

Use it from asyncio (``await phone.start()``) or from a test's thread with
:class:`PhoneThread`, whose methods are safe to call while blocking ``adb`` or
adbutils calls run.

Test hooks (each is what a person does with the phone in hand):
``allow_usb_debugging()`` (tap Allow on "Allow USB debugging?"),
``unplug()`` / ``replug()``, ``receive_sms()``, ``receive_call()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .commands import Commands
from .packages import SHELL_PERMISSIONS
from .services import PhoneServices
from .shell import PhoneShell
from .sms import SmsService
from .state import CALL_INCOMING, CALL_MISSED, CALL_OUTGOING, SMS_INBOX, Package, PhoneState
from .sync import PhoneFiles, SyncService
from .transport import AdbdConnection, AuthGate

log = logging.getLogger(__name__)
T = TypeVar("T")

# adbd's CNXN banner features (AOSP adb transport.cpp kFeature*): shell protocol v2,
# "cmd", and push making parent directories itself.
FEATURES = ("shell_v2", "cmd", "fixed_push_mkdir")


class App(Protocol):
    package: Package

    async def launch(self) -> None: ...
    async def boot(self) -> None: ...
    async def stop(self) -> None: ...
    def start_service(self, cls: str, *, foreground: bool) -> str | None: ...
    def running_services(self) -> list[str]: ...
    def receive_sms(self, row: dict[str, Any]) -> None: ...
    def screen(self) -> dict[str, Any]: ...


class VirtualPhone:
    def __init__(self, *, serial: str = "SIMPHONE01", data_dir: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, loopback: str = "127.0.0.2",
                 require_auth: bool = True, timezone: str = "Europe/Paris",
                 model: str = "Pixel 7", sdk: int = 34, release: str = "14") -> None:
        import tempfile
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="phone-sim-")
            data_dir = Path(self._tmp.name)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.serial = serial
        self.host = host
        self.port = port
        self.loopback = loopback  # the phone's own 127.0.0.1, as an address on this machine
        self.state = PhoneState(path=data_dir / "phone.json", serial=serial, model=model, sdk=sdk,
                                release=release, timezone=timezone)
        self.files = PhoneFiles(data_dir / "fs")
        self.auth = AuthGate(required=require_auth, keys_file=data_dir / "adb_keys")
        self.commands = Commands(self)
        self.shell = PhoneShell(self.commands.table())
        self.services = PhoneServices(shell=self.shell, sync=SyncService(self.files), net=self)
        self.sms = SmsService(self.state)
        self.apps: dict[str, App] = {}
        self.connections: list[AdbdConnection] = []
        self.calls_placed: list[str] = []
        self._server: asyncio.base_events.Server | None = None
        self._conn_count = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        for name in ("android", "com.android.phone", "com.android.shell", "com.android.settings",
                     "com.android.providers.telephony", "com.google.android.apps.messaging"):
            self.state.packages[name] = Package(name, uid=1000 if name == "android" else 10001, system=True)
        self.state.packages["com.android.shell"] = Package(
            "com.android.shell", requested=tuple(sorted(SHELL_PERMISSIONS)),
            granted=set(SHELL_PERMISSIONS), uid=2000, system=True)
        self.state.props["ro.adb.secure"] = "1" if require_auth else "0"

    # -- apps --------------------------------------------------------------------------------
    def install(self, app: App) -> None:
        self.apps[app.package.name] = app
        self.state.packages[app.package.name] = app.package
        self.state.restore_grants()

    # -- adbd --------------------------------------------------------------------------------
    def banner(self) -> str:
        p = self.state.props
        return (f"device::ro.product.name={p['ro.product.name']};ro.product.model={p['ro.product.model']};"
                f"ro.product.device={p['ro.product.device']};features={','.join(FEATURES)}")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        for app in list(self.apps.values()):
            await app.boot()  # what apps do on BOOT_COMPLETED
        log.info("virtual phone %s: adbd on %s:%d", self.serial, self.host, self.port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conn_count += 1
        conn = AdbdConnection(reader, writer, banner=self.banner, auth=self.auth,
                              services=self.services, name=f"host-{self._conn_count}")
        self.connections.append(conn)
        try:
            await conn.run()
        finally:
            await self.services.drop_transport(conn)
            if conn in self.connections:
                self.connections.remove(conn)

    async def unplug(self) -> None:
        """The cable is pulled: connections drop, nothing answers until replug()."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            await conn.close()

    async def replug(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def reboot(self) -> None:
        """Off and on again: connections drop, boot-time settings are read again (e.g.
        SmsUsageMonitor's ``sms_outgoing_check_max_count``), boot-started apps start."""
        await self.unplug()
        for app in list(self.apps.values()):
            await app.stop()
        radio = self.sms.radio
        self.sms = SmsService(self.state, radio)
        await self.replug()
        for app in list(self.apps.values()):
            await app.boot()

    async def stop(self) -> None:
        await self.unplug()
        for app in list(self.apps.values()):
            await app.stop()
        self.state.save()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def online(self) -> bool:
        return any(c.online for c in self.connections)

    # -- the user's hands ----------------------------------------------------------------------
    async def usb_debugging_dialog(self, within: float = 20.0) -> list[str]:
        """Wait until "Allow USB debugging?" is on screen (the adb server shows the device as
        ``unauthorized`` a little earlier: from the first AUTH token, before it sends its key)."""
        async with asyncio.timeout(within):
            while not self.auth.pending:
                self.auth.changed.clear()
                await self.auth.changed.wait()
        return list(self.auth.pending)

    def allow_usb_debugging(self, *, always: bool = True) -> int:
        return self.auth.answer(True, always=always)

    def deny_usb_debugging(self) -> int:
        return self.auth.answer(False)

    def receive_sms(self, sender: str, body: str, *, sub_id: int = 1,
                    date_ms: int | None = None) -> dict[str, Any]:
        row = self.state.add_sms(box=SMS_INBOX, address=sender, body=body, sub_id=sub_id,
                                 date_ms=date_ms)
        for app in self.apps.values():
            app.receive_sms(row)
        return row

    def receive_call(self, number: str, *, answered: bool = False, duration: int = 0,
                     date_ms: int | None = None) -> dict[str, Any]:
        kind = CALL_INCOMING if answered else CALL_MISSED
        return self.state.add_call(number=number, kind=kind, duration=duration if answered else 0,
                                   date_ms=date_ms)

    # -- what the shell commands ask of the device -------------------------------------------------
    def place_call(self, number: str) -> None:
        self.calls_placed.append(number)
        self.state.log_radio({"kind": "call", "number": number, "by": "com.android.shell"})
        self.state.add_call(number=number, kind=CALL_OUTGOING, duration=0)

    def start_activity(self, pkg: str, cls: str, action: str | None, data: str | None) -> str | None:
        app = self.apps.get(pkg)
        if pkg not in self.state.packages:
            return f"Error: Activity class {{{pkg}/{cls}}} does not exist."
        if app is not None:
            self._spawn(app.launch())
        return None

    def start_service(self, pkg: str, cls: str, *, foreground: bool) -> str | None:
        app = self.apps.get(pkg)
        if app is None:
            return "Error: Not found; no service started."
        return app.start_service(cls, foreground=foreground)

    def force_stop(self, pkg: str) -> None:
        app = self.apps.get(pkg)
        if app is not None:
            self._spawn(app.stop())

    def running_services(self, pkg: str) -> list[str]:
        out: list[str] = []
        for name, app in self.apps.items():
            if not pkg or name == pkg:
                out += app.running_services()
        return out

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class PhoneThread:
    """A :class:`VirtualPhone` on its own event loop in a thread (for blocking callers)."""

    def __init__(self, factory: Callable[[], VirtualPhone]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="phone-sim", daemon=True)
        self._thread.start()
        self.phone: VirtualPhone = self.call(self._make(factory))

    @staticmethod
    async def _make(factory: Callable[[], VirtualPhone]) -> VirtualPhone:
        phone = factory()
        await phone.start()
        return phone

    def call(self, coro: Awaitable[T], timeout: float | None = 30) -> T:
        async def wrap() -> T:
            return await coro
        fut: Future[T] = asyncio.run_coroutine_threadsafe(wrap(), self.loop)
        return fut.result(timeout)

    def do(self, fn: Callable[[], T], timeout: float | None = 30) -> T:
        async def wrap() -> T:
            return fn()
        return self.call(wrap(), timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.phone.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
