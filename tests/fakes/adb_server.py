"""An adb server of the tests' own: the real adb host protocol on 127.0.0.1 TCP.

adbutils (and the ``adb`` command line) talk to it unchanged. It speaks:

* smart-socket requests (4 hex digits of length, then the request) answered
  ``OKAY`` / ``FAIL`` + 4-hex-length message: ``host:version``,
  ``host:devices``, ``host:devices-l``, ``host:track-devices`` (a length-
  prefixed device list now and on every change), ``host:transport:<serial>``,
  ``host:transport-any``, ``host:tport:serial:<serial>`` / ``host:tport:any``
  (+ 8-byte transport id), ``host-serial:<serial>:get-state|features``,
  ``host:kill``;
* once a transport is chosen: ``shell:<cmd>`` (raw output, then close),
  ``shell,v2:<cmd>`` (id + length framed stdout/stderr/exit),
  ``reverse:forward[:norebind]:tcp:X;tcp:Y``, ``reverse:list-forward``,
  ``reverse:killforward:tcp:X``, ``reverse:killforward-all`` (each answered
  with two OKAYs, as adbd does), and ``sync:`` with STAT / SEND-DATA-DONE /
  RECV / LIST / QUIT.

Behind it are scriptable :class:`FakePhone` objects: plug / unplug,
unauthorised (USB debugging not yet allowed), installed packages, runtime
permissions granted with ``pm grant``, a file tree for pushes, a record of
every shell command, ``adb reverse`` made real (a listener on the phone's
loopback address that pipes to the host port — the "phone" is this machine),
``am start -a android.intent.action.CALL`` recorded (and written to the fake
Termux phone's call log), and Termux's RUN_COMMAND intent, which — when
``allow-external-apps`` is set and Termux is installed — starts the pushed
agent locally as a subprocess with the fake ``termux-*`` commands on PATH.

The server runs its own event loop in a thread, so that blocking adbutils
calls made from a test never starve it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .termux.termux_fake import PhoneState

ADB_VERSION = 41
TERMUX_PREFIX = "/data/data/com.termux/files/usr"
TERMUX_HOME = "/data/data/com.termux/files/home"
RUNTIME_PERMISSIONS = frozenset({
    "android.permission.SEND_SMS", "android.permission.RECEIVE_SMS", "android.permission.READ_SMS",
    "android.permission.READ_CALL_LOG", "android.permission.READ_PHONE_STATE",
    "android.permission.CALL_PHONE", "android.permission.READ_CONTACTS"})
UNAUTHORIZED = ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                "Try 'adb kill-server' if that seems wrong.\n"
                "Otherwise check for a confirmation dialog on your device.")
BASE_PACKAGES = ("android", "com.android.phone", "com.android.shell", "com.android.settings")
TERMUX_PACKAGES = ("com.termux", "com.termux.api")


@dataclass
class FakePhone:
    serial: str
    root: Path
    state: str = "device"  # device | unauthorized | offline
    packages: set[str] = field(default_factory=lambda: set(BASE_PACKAGES) | set(TERMUX_PACKAGES))
    allow_external_apps: bool = True  # ~/.termux/termux.properties
    timezone: str = "Europe/Paris"
    model: str = "SM_G960F"
    loopback: str = "127.0.0.1"  # the phone's 127.0.0.1, as bound on this machine
    run_agents: bool = True
    plugged: bool = False
    transport_id: int = 0
    granted: dict[str, set[str]] = field(default_factory=dict)
    shell_log: list[str] = field(default_factory=list)
    calls_placed: list[str] = field(default_factory=list)
    run_commands: list[tuple[str, list[str]]] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    reverses: dict[str, str] = field(default_factory=dict)  # "tcp:X" -> "tcp:Y"
    termux: PhoneState | None = None
    settings: dict[str, str] = field(default_factory=dict)
    _listeners: dict[str, asyncio.AbstractServer] = field(default_factory=dict)
    _pipes: set[asyncio.StreamWriter] = field(default_factory=set)

    def path(self, device_path: str) -> Path:
        parts = [p for p in device_path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise PermissionError(device_path)
        return self.root.joinpath(*parts)

    def agents_running(self) -> list[subprocess.Popen]:
        return [p for p in self.processes if p.poll() is None]

    def stop_agents(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)


class FakeAdbServer:
    def __init__(self, workdir: str | os.PathLike[str], *, port: int = 0) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.phones: dict[str, FakePhone] = {}
        self.requests: list[str] = []  # every smart-socket request, for assertions
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-adb", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._trackers: set[asyncio.Queue[str | None]] = set()
        self._next_transport = 1
        self.agent_python = [sys.executable, "-S"]

    # -- life ----------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(15)

    def start(self) -> int:
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._listen)
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def kill(self) -> None:
        """The adb server dies: listener, clients and reverse forwards are gone."""
        async def _kill() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for w in list(self._clients):
                w.transport.abort()
            self._clients.clear()
            for q in self._trackers:
                q.put_nowait(None)
            for phone in self.phones.values():
                await self._drop_reverses(phone)
        self._call(_kill)

    def close(self) -> None:
        if self._thread.is_alive():
            self.kill()
            for phone in self.phones.values():
                phone.stop_agents()

            async def _cancel_all() -> None:
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            self._call(_cancel_all)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    # -- scripting -------------------------------------------------------------

    def add_phone(self, serial: str, *, plugged: bool = True, **kw: Any) -> FakePhone:
        root = self.workdir / f"phone-{serial}"
        (root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        (root / TERMUX_HOME.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (root / "sdcard").mkdir(parents=True, exist_ok=True)
        phone = FakePhone(serial=serial, root=root, **kw)
        if phone.termux is None:
            phone.termux = PhoneState(root / "termux-api-state", timezone=phone.timezone)
        self.phones[serial] = phone
        if plugged:
            self.plug(serial)
        return phone

    def plug(self, serial: str) -> None:
        def _plug() -> None:
            phone = self.phones[serial]
            phone.plugged = True
            phone.transport_id = self._next_transport
            self._next_transport += 1
            self._notify()
        self._call(_plug)

    def unplug(self, serial: str) -> None:
        async def _unplug() -> None:
            phone = self.phones[serial]
            phone.plugged = False
            await self._drop_reverses(phone)
            self._notify()
        self._call(_unplug)

    def set_state(self, serial: str, state: str) -> None:
        """e.g. ``"unauthorized"`` until the user taps "Allow USB debugging"."""
        def _set() -> None:
            self.phones[serial].state = state
            self._notify()
        self._call(_set)

    def device_list(self, *, long: bool = False) -> str:
        lines = []
        for phone in self.phones.values():
            if not phone.plugged:
                continue
            line = f"{phone.serial}\t{phone.state}"
            if long:
                line = (f"{phone.serial:<22} {phone.state} usb:1-1 product:starltexx "
                        f"model:{phone.model} device:starlte transport_id:{phone.transport_id}")
            lines.append(line)
        return "".join(line + "\n" for line in lines)

    def _notify(self) -> None:
        text = self.device_list()
        for q in self._trackers:
            q.put_nowait(text)

    # -- wire helpers ----------------------------------------------------------

    @staticmethod
    def _block(text: str | bytes) -> bytes:
        data = text.encode() if isinstance(text, str) else text
        return f"{len(data):04x}".encode() + data

    def _fail(self, w: asyncio.StreamWriter, message: str) -> None:
        w.write(b"FAIL" + self._block(message))

    async def _request(self, r: asyncio.StreamReader) -> str:
        size = int((await r.readexactly(4)).decode(), 16)
        return (await r.readexactly(size)).decode()

    # -- the protocol ------------------------------------------------------------

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._clients.add(w)
        try:
            await self._serve(r, w)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.CancelledError):
            pass  # a connection handler's end: the server's shutdown included
        finally:
            self._clients.discard(w)
            w.close()

    def _phone_for(self, w: asyncio.StreamWriter, selector: str) -> FakePhone | None:
        plugged = [p for p in self.phones.values() if p.plugged]
        if selector == "any":
            if len(plugged) != 1:
                self._fail(w, "more than one device/emulator" if plugged else "no devices/emulators found")
                return None
            phone = plugged[0]
        else:
            phone = next((p for p in plugged if p.serial == selector), None)
            if phone is None:
                self._fail(w, f"device '{selector}' not found")
                return None
        if phone.state == "unauthorized":
            self._fail(w, UNAUTHORIZED)
            return None
        if phone.state != "device":
            self._fail(w, "device offline")
            return None
        return phone

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await self._request(r)
        self.requests.append(req)
        if req == "host:version":
            w.write(b"OKAY" + self._block(f"{ADB_VERSION:04x}"))
        elif req in ("host:devices", "host:devices-l"):
            w.write(b"OKAY" + self._block(self.device_list(long=req.endswith("-l"))))
        elif req == "host:track-devices":
            q: asyncio.Queue[str | None] = asyncio.Queue()
            self._trackers.add(q)
            try:
                w.write(b"OKAY" + self._block(self.device_list()))
                await w.drain()
                while (text := await q.get()) is not None:
                    w.write(self._block(text))
                    await w.drain()
            finally:
                self._trackers.discard(q)
        elif req == "host:kill":
            w.write(b"OKAY")
            await w.drain()
            self._loop.call_soon(lambda: asyncio.ensure_future(self._kill_async()))
        elif req.startswith("host-serial:"):
            serial, _, cmd = req[len("host-serial:"):].rpartition(":")
            phone = self._phone_for(w, serial) if cmd != "get-state" else self.phones.get(serial)
            if phone is None:
                if cmd == "get-state":
                    self._fail(w, f"device '{serial}' not found")
            elif cmd == "get-state":
                w.write(b"OKAY" + self._block(phone.state))
            elif cmd == "features":
                w.write(b"OKAY" + self._block("shell_v2,cmd,stat_v2,fixed_push_mkdir,abb"))
            elif cmd == "get-serialno":
                w.write(b"OKAY" + self._block(phone.serial))
            else:
                self._fail(w, f"unsupported request {cmd!r}")
        elif req.startswith(("host:transport:", "host:tport:serial:")) or req in (
                "host:transport-any", "host:tport:any"):
            selector = "any" if req.endswith("any") else req.rsplit(":", 1)[1]
            phone = self._phone_for(w, selector)
            if phone is not None:
                w.write(b"OKAY")
                if req.startswith("host:tport"):
                    w.write(struct.pack("<Q", phone.transport_id))
                await w.drain()
                await self._device_service(phone, r, w)
        else:
            self._fail(w, f"unknown host service {req!r}")
        await w.drain()

    async def _kill_async(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _device_service(self, phone: FakePhone, r: asyncio.StreamReader,
                              w: asyncio.StreamWriter) -> None:
        req = await self._request(r)
        self.requests.append(f"[{phone.serial}] {req}")
        if req.startswith("shell:"):
            out, code = await self._shell(phone, req[len("shell:"):])
            w.write(b"OKAY" + out)
        elif req.startswith("shell,v2:"):
            out, code = await self._shell(phone, req[len("shell,v2:"):])
            w.write(b"OKAY")
            if out:
                w.write(bytes([1]) + struct.pack("<I", len(out)) + out)
            w.write(bytes([3]) + struct.pack("<I", 1) + bytes([code & 0xFF]))
        elif req.startswith("reverse:"):
            await self._reverse(phone, req[len("reverse:"):], w)
        elif req == "sync:":
            w.write(b"OKAY")
            await w.drain()
            await self._sync(phone, r, w)
        else:
            self._fail(w, f"unknown device service {req!r}")

    # -- reverse -----------------------------------------------------------------

    async def _reverse(self, phone: FakePhone, cmd: str, w: asyncio.StreamWriter) -> None:
        if cmd.startswith("forward:"):
            spec = cmd[len("forward:"):]
            norebind = spec.startswith("norebind:")
            if norebind:
                spec = spec[len("norebind:"):]
            remote, _, local = spec.partition(";")
            w.write(b"OKAY")
            if not (remote.startswith("tcp:") and local.startswith("tcp:")):
                self._fail(w, f"unsupported reverse spec {spec!r}")
                return
            if remote in phone.reverses:
                if norebind:
                    self._fail(w, "cannot rebind existing socket")
                    return
                await self._drop_reverse(phone, remote)
            try:
                await self._open_reverse(phone, remote, local)
            except OSError as exc:
                self._fail(w, f"cannot bind listener: {exc.strerror}")
                return
            w.write(b"OKAY")
        elif cmd == "list-forward":
            w.write(b"OKAY" + self._block("".join(f"{phone.serial} {k} {v}\n"
                                                   for k, v in phone.reverses.items())))
        elif cmd.startswith("killforward:"):
            remote = cmd[len("killforward:"):]
            w.write(b"OKAY")
            if remote not in phone.reverses:
                self._fail(w, f"listener '{remote}' not found")
                return
            await self._drop_reverse(phone, remote)
            w.write(b"OKAY")
        elif cmd == "killforward-all":
            w.write(b"OKAY")
            await self._drop_reverses(phone)
            w.write(b"OKAY")
        else:
            self._fail(w, f"unknown reverse service {cmd!r}")

    async def _open_reverse(self, phone: FakePhone, remote: str, local: str) -> None:
        host_port = int(local[4:])

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        async def accept(pr: asyncio.StreamReader, pw: asyncio.StreamWriter) -> None:
            try:
                hr, hw = await asyncio.open_connection("127.0.0.1", host_port)
            except OSError:
                pw.close()
                return
            phone._pipes.update((pw, hw))
            try:
                await asyncio.gather(pipe(pr, hw), pipe(hr, pw))
            finally:
                phone._pipes.difference_update((pw, hw))

        server = await asyncio.start_server(accept, phone.loopback, int(remote[4:]), reuse_address=True)
        phone._listeners[remote] = server
        phone.reverses[remote] = local

    async def _drop_reverse(self, phone: FakePhone, remote: str) -> None:
        phone.reverses.pop(remote, None)
        server = phone._listeners.pop(remote, None)
        if server is not None:
            server.close()

    async def _drop_reverses(self, phone: FakePhone) -> None:
        for remote in list(phone.reverses):
            await self._drop_reverse(phone, remote)
        for pw in list(phone._pipes):  # the USB link carried these: they break
            pw.transport.abort()
        phone._pipes.clear()

    # -- sync ------------------------------------------------------------------

    async def _sync(self, phone: FakePhone, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await r.readexactly(8)
            cmd, size = head[:4].decode(), struct.unpack("<I", head[4:])[0]
            if size > 1024:
                raise ValueError("sync path too long")
            arg = (await r.readexactly(size)).decode()
            if cmd == "STAT":
                try:
                    st = phone.path(arg).stat()
                    w.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size, int(st.st_mtime)))
                except (OSError, PermissionError):
                    w.write(b"STAT" + struct.pack("<III", 0, 0, 0))
            elif cmd == "SEND":
                path, _, mode = arg.rpartition(",")
                chunks = []
                while True:
                    kind = (await r.readexactly(4)).decode()
                    n = struct.unpack("<I", await r.readexactly(4))[0]
                    if kind == "DATA":
                        if n > 64 * 1024:
                            raise ValueError("sync DATA chunk over 64 KiB")
                        chunks.append(await r.readexactly(n))
                    elif kind == "DONE":
                        break
                    else:
                        raise ValueError(f"unexpected sync id {kind!r}")
                try:
                    target = phone.path(path)
                    if not target.parent.is_dir():
                        target.parent.mkdir(parents=True)  # adbd's fixed_push_mkdir
                    target.write_bytes(b"".join(chunks))
                    target.chmod(int(mode) & 0o777 if mode else 0o644)
                    w.write(b"OKAY" + struct.pack("<I", 0))
                except OSError as exc:
                    msg = f"couldn't create file: {exc.strerror}".encode()
                    w.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
            elif cmd == "RECV":
                try:
                    data = phone.path(arg).read_bytes()
                except OSError as exc:
                    msg = f"open failed: {exc.strerror}".encode()
                    w.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                else:
                    for i in range(0, len(data), 64 * 1024):
                        chunk = data[i:i + 64 * 1024]
                        w.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                    w.write(b"DONE" + struct.pack("<I", 0))
            elif cmd == "LIST":
                base = phone.path(arg)
                for entry in sorted(base.iterdir()) if base.is_dir() else []:
                    st = entry.stat()
                    name = entry.name.encode()
                    w.write(b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size, int(st.st_mtime),
                                                  len(name)) + name)
                w.write(b"DONE" + bytes(16))
            elif cmd == "QUIT":
                return
            else:
                raise ValueError(f"unknown sync command {cmd!r}")
            await w.drain()

    # -- shell -------------------------------------------------------------------

    async def _shell(self, phone: FakePhone, command: str) -> tuple[bytes, int]:
        exit_marker = "; echo X4EXIT:$?"
        wants_exit = command.endswith(exit_marker)
        if wants_exit:
            command = command[:-len(exit_marker)]
        phone.shell_log.append(command)
        try:
            argv = shlex.split(command)
        except ValueError:
            argv = []
        out, code = self._run(phone, argv)
        data = out.encode()
        if wants_exit:
            data += f"X4EXIT:{code}\n".encode()
        return data, code

    def _run(self, phone: FakePhone, argv: list[str]) -> tuple[str, int]:
        if not argv:
            return "", 0
        cmd, args = argv[0], argv[1:]
        if cmd == "pm" and args[:2] == ["list", "packages"]:
            return "".join(f"package:{p}\n" for p in sorted(phone.packages)), 0
        if cmd == "pm" and args[:1] == ["grant"] and len(args) == 3:
            pkg, perm = args[1], args[2]
            if pkg not in phone.packages:
                return ("Exception occurred while executing 'grant':\n"
                        f"java.lang.IllegalArgumentException: Unknown package: {pkg}\n"), 255
            if perm not in RUNTIME_PERMISSIONS:
                return ("Exception occurred while executing 'grant':\njava.lang.SecurityException: "
                        f"Permission {perm} requested by {pkg} is not a changeable permission type\n"), 255
            phone.granted.setdefault(pkg, set()).add(perm)
            return "", 0
        if cmd == "getprop":
            props = {"persist.sys.timezone": phone.timezone, "ro.product.model": phone.model,
                     "ro.build.version.release": "13", "ro.build.version.sdk": "33"}
            return (props.get(args[0], "") + "\n") if args else "", 0
        if cmd == "settings" and args[:1] == ["get"] and len(args) == 3:
            return phone.settings.get(args[2], "null") + "\n", 0
        if cmd == "settings" and args[:1] == ["put"] and len(args) == 4:
            phone.settings[args[2]] = args[3]
            return "", 0
        if cmd == "mkdir":
            for a in args:
                if not a.startswith("-"):
                    phone.path(a).mkdir(parents=True, exist_ok=True)
            return "", 0
        if cmd == "rm":
            for a in args:
                if not a.startswith("-"):
                    phone.path(a).unlink(missing_ok=True)
            return "", 0
        if cmd == "chmod":
            return "", 0
        if cmd == "am" and args[:1] == ["start"]:
            return self._am_start(phone, args[1:])
        if cmd == "am" and args[:1] == ["startservice"]:
            return self._am_startservice(phone, args[1:])
        if cmd == "echo":
            return " ".join(args) + "\n", 0
        return f"/system/bin/sh: {cmd}: inaccessible or not found\n", 127

    @staticmethod
    def _intent(args: list[str]) -> dict[str, Any]:
        intent: dict[str, Any] = {"extras": {}}
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-a", "-d", "-n") and i + 1 < len(args):
                intent[a] = args[i + 1]
                i += 2
            elif a in ("--es", "--esa", "--ez", "--ei") and i + 2 < len(args):
                key, value = args[i + 1], args[i + 2]
                if a == "--esa":
                    value = [v.replace("\\,", ",") for v in _split_esa(value)]
                elif a == "--ez":
                    value = value == "true"
                elif a == "--ei":
                    value = int(value)
                intent["extras"][key] = value
                i += 3
            elif a == "--user" and i + 1 < len(args):
                i += 2
            else:
                i += 1
        return intent

    def _am_start(self, phone: FakePhone, args: list[str]) -> tuple[str, int]:
        intent = self._intent(args)
        if intent.get("-a") == "android.intent.action.CALL":
            number = str(intent.get("-d", ""))[len("tel:"):]
            if "android.permission.CALL_PHONE" not in phone.granted.get("com.android.shell", {
                    "android.permission.CALL_PHONE"}):
                return "Error: Requires permission android.permission.CALL_PHONE\n", 255
            phone.calls_placed.append(number)
            if phone.termux is not None:
                phone.termux.add_call(number, "OUTGOING", duration=0)
            return ("Starting: Intent { act=android.intent.action.CALL dat=tel:xxxxxxxxxx }\n"), 0
        return f"Starting: Intent {{ act={intent.get('-a')} }}\n", 0

    def _am_startservice(self, phone: FakePhone, args: list[str]) -> tuple[str, int]:
        intent = self._intent(args)
        component = intent.get("-n", "")
        if component not in ("com.termux/com.termux.app.RunCommandService",
                             "com.termux/.app.RunCommandService"):
            return "Error: Not found; no service started.\n", 255
        if "com.termux" not in phone.packages:
            return "Error: Not found; no service started.\n", 255
        started = "Starting service: Intent { act=com.termux.RUN_COMMAND cmp=com.termux/.app.RunCommandService (has extras) }\n"
        extras = intent["extras"]
        path = extras.get("com.termux.RUN_COMMAND_PATH", "")
        argv = list(extras.get("com.termux.RUN_COMMAND_ARGUMENTS", []))
        phone.run_commands.append((path, argv))
        if not phone.allow_external_apps:
            return started, 0  # Termux refuses it with a notification on the phone only
        if phone.run_agents:
            self._launch(phone, path, argv)
        return started, 0

    def _launch(self, phone: FakePhone, path: str, argv: list[str]) -> None:
        """Run what Termux would run, here: its python is ours, its files are
        under the phone's root, its HOME is Termux's home."""
        if not path.endswith("/python"):
            return
        host_args = [str(phone.path(a)) if a.startswith("/") and phone.path(a).exists() else a
                     for a in argv]
        env = phone.termux.env() if phone.termux is not None else dict(os.environ)
        env["HOME"] = str(phone.path(TERMUX_HOME))
        env["TZ"] = phone.timezone
        log = open(phone.root / "agent-stdio.log", "ab")
        proc = subprocess.Popen([*self.agent_python, *host_args], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=env["HOME"])
        log.close()
        phone.processes.append(proc)


def _split_esa(value: str) -> list[str]:
    """am's --esa splits on commas not preceded by a backslash."""
    parts, cur, i = [], "", 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] == ",":
            cur += "\\,"
            i += 2
        elif value[i] == ",":
            parts.append(cur)
            cur = ""
            i += 1
        else:
            cur += value[i]
            i += 1
    parts.append(cur)
    return parts
