"""The services adbd opens for the host: shell, exec, sync, tcp (forward), reverse.

Sources (AOSP packages/modules/adb): ``SERVICES.TXT`` (names and answers),
``daemon/services.cpp`` (``shell``, ``exec``, ``sync``, ``reverse:``,
``tcp:``), ``daemon/shell_service.cpp`` + ``shell_protocol.h`` (shell v2
packets: one id byte — 0 stdin, 1 stdout, 2 stderr, 3 exit, 4 close-stdin,
5 window-size — then a u32 little-endian length; with no command the shell is
interactive; with a command and no type given, raw), ``daemon/file_sync_service.cpp``
(the sync service, see :mod:`.sync`), ``adb_listeners.cpp`` (reverse
listeners belong to the transport: they go when it goes; ``--no-rebind`` on
an existing one fails with "cannot rebind existing socket"; an unknown one
with "listener 'tcp:X' not found"; ``adb.cpp`` ``handle_forward_request``: on
the device the answer is one ``OKAY`` (the adb server adds its own before it),
then the picked port for ``tcp:0``; ``list-forward`` is a bare length-prefixed
string; a failure is ``FAIL`` + length-prefixed message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass, field
from typing import Protocol

from .sync import SyncService
from .transport import AdbdConnection, ServiceRouter, Stream, StreamClosed, StreamHandler

log = logging.getLogger(__name__)

# shell_protocol.h
ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW_SIZE = range(6)
_PACKET = struct.Struct("<BI")


@dataclass(frozen=True, slots=True)
class ShellResult:
    stdout: bytes = b""
    stderr: bytes = b""
    exit: int = 0
    merged: bytes = b""  # stdout and stderr interleaved as written


class Shell(Protocol):
    async def run(self, command: str, *, stdin: bytes = b"") -> ShellResult: ...


class PhoneNet(Protocol):
    """The phone's own network: its 127.0.0.1 is ``loopback`` on this machine."""

    loopback: str


@dataclass
class ReverseTable:
    """adb reverse listeners of one transport: device spec -> host spec."""

    entries: dict[str, tuple[str, asyncio.base_events.Server]] = field(default_factory=dict)

    async def close_all(self) -> None:
        for _, server in self.entries.values():
            server.close()
        self.entries.clear()


def _fail(message: str) -> bytes:
    data = message.encode()
    return b"FAIL" + f"{len(data):04x}".encode() + data


def _tcp_port(spec: str) -> int | None:
    if not spec.startswith("tcp:"):
        return None
    try:
        port = int(spec[4:])
    except ValueError:
        return None
    return port if 0 <= port < 65536 else None


async def pipe_socket(stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Carry bytes both ways between an adb stream and a TCP socket until either end closes."""

    async def up() -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await stream.write(data)

    async def down() -> None:
        while True:
            data = await stream.read()
            if not data:
                return
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, StreamClosed, ConnectionError, OSError):
                await task
        writer.close()


class PhoneServices(ServiceRouter):
    def __init__(self, *, shell: Shell, sync: SyncService, net: PhoneNet) -> None:
        self.shell = shell
        self.sync = sync
        self.net = net
        self.reverses: dict[int, ReverseTable] = {}

    def reverse_table(self, conn: AdbdConnection) -> ReverseTable:
        return self.reverses.setdefault(id(conn), ReverseTable())

    async def drop_transport(self, conn: AdbdConnection) -> None:
        table = self.reverses.pop(id(conn), None)
        if table is not None:
            await table.close_all()

    def open(self, name: str, conn: AdbdConnection) -> StreamHandler | None:
        if name.startswith("shell"):
            head, sep, command = name.partition(":")
            if not sep:
                return None
            options = head.split(",")[1:]
            if "v2" in options:
                return lambda s: self._shell_v2(s, command, raw="pty" not in options)
            return lambda s: self._shell_v1(s, command)
        if name.startswith("exec:"):
            return lambda s: self._shell_v1(s, name[5:])
        if name in ("sync:", "sync"):
            return self.sync.serve
        if name.startswith("reverse:"):
            return lambda s: self._reverse(s, conn, name[len("reverse:"):])
        if name.startswith("tcp:"):
            rest = name[4:]
            host, _, port_text = rest.rpartition(":") if ":" in rest else ("", "", rest)
            try:
                port = int(port_text)
            except ValueError:
                return None
            return lambda s: self._tcp(s, host or "127.0.0.1", port)
        log.debug("service %r not offered", name)
        return None  # services.cpp: unknown service -> the stream is closed

    # -- shell ------------------------------------------------------------------
    async def _shell_v1(self, stream: Stream, command: str) -> None:
        if not command.strip():
            await self._interactive(stream)
            return
        result = await self.shell.run(command)
        await stream.write(result.merged or result.stdout + result.stderr)

    async def _interactive(self, stream: Stream) -> None:
        buf = b""
        await stream.write(b"$ ")
        while True:
            data = await stream.read()
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text == "exit":
                    return
                if text:
                    result = await self.shell.run(text)
                    await stream.write(result.stdout + result.stderr)
                await stream.write(b"$ ")

    async def _shell_v2(self, stream: Stream, command: str, *, raw: bool) -> None:
        stdin = b""
        if not command.strip():
            await self._interactive_v2(stream)
            return
        result = await self.shell.run(command, stdin=stdin)
        if result.stdout:
            await stream.write(_PACKET.pack(ID_STDOUT, len(result.stdout)) + result.stdout)
        if result.stderr:
            await stream.write(_PACKET.pack(ID_STDERR, len(result.stderr)) + result.stderr)
        await stream.write(_PACKET.pack(ID_EXIT, 1) + bytes([result.exit & 0xFF]))

    async def _interactive_v2(self, stream: Stream) -> None:
        buf = b""
        code = 0
        while True:
            try:
                ident, length = _PACKET.unpack(await stream.read_exactly(_PACKET.size))
                payload = await stream.read_exactly(length)
            except StreamClosed:
                return
            if ident == ID_CLOSE_STDIN:
                break
            if ident != ID_STDIN:
                continue
            buf += payload
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text == "exit":
                    await stream.write(_PACKET.pack(ID_EXIT, 1) + bytes([code]))
                    return
                if text:
                    result = await self.shell.run(text)
                    code = result.exit & 0xFF
                    out = result.stdout + result.stderr
                    await stream.write(_PACKET.pack(ID_STDOUT, len(out)) + out)
        await stream.write(_PACKET.pack(ID_EXIT, 1) + bytes([code]))

    # -- adb forward's far end ----------------------------------------------------
    async def _tcp(self, stream: Stream, host: str, port: int) -> None:
        # The phone's 127.0.0.1/localhost is its own loopback, not this machine's.
        target = self.net.loopback if host in ("127.0.0.1", "localhost") else host
        try:
            reader, writer = await asyncio.open_connection(target, port)
        except OSError:
            return  # nothing listens there: the stream closes, as adbd's does
        await pipe_socket(stream, reader, writer)

    # -- adb reverse ------------------------------------------------------------------
    async def _reverse(self, stream: Stream, conn: AdbdConnection, command: str) -> None:
        table = self.reverse_table(conn)
        if command.startswith("forward:"):
            spec = command[len("forward:"):]
            norebind = spec.startswith("norebind:")
            if norebind:
                spec = spec[len("norebind:"):]
            device_spec, _, host_spec = spec.partition(";")
            port = _tcp_port(device_spec)
            if port is None or _tcp_port(host_spec) is None:
                await stream.write(_fail(f"cannot bind listener: unsupported spec {spec!r}"))
                return
            if device_spec in table.entries:
                if norebind:
                    await stream.write(_fail("cannot rebind existing socket"))
                    return
                table.entries.pop(device_spec)[1].close()
            try:
                server = await asyncio.start_server(
                    lambda r, w: self._reverse_accept(conn, host_spec, r, w), self.net.loopback, port)
            except OSError as exc:
                await stream.write(_fail(f"cannot bind listener: {exc.strerror}"))
                return
            bound = server.sockets[0].getsockname()[1]
            if port == 0:
                device_spec = f"tcp:{bound}"
            table.entries[device_spec] = (host_spec, server)
            answer = b"OKAY"
            if port == 0:  # adb_listeners.cpp: the port picked for tcp:0 is returned
                text = str(bound).encode()
                answer += f"{len(text):04x}".encode() + text
            await stream.write(answer)
        elif command == "list-forward":
            body = "".join(f"{conn.name} {dev} {host}\n" for dev, (host, _) in table.entries.items())
            data = body.encode()
            await stream.write(f"{len(data):04x}".encode() + data)
        elif command.startswith("killforward:"):
            spec = command[len("killforward:"):]
            if spec not in table.entries:
                await stream.write(_fail(f"listener '{spec}' not found"))
                return
            table.entries.pop(spec)[1].close()
            await stream.write(b"OKAY")
        elif command == "killforward-all":
            await table.close_all()
            await stream.write(b"OKAY")
        else:
            await stream.write(_fail(f"unknown reverse command {command!r}"))

    async def _reverse_accept(self, conn: AdbdConnection, host_spec: str,
                              reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if conn.closed.is_set():
            writer.close()
            return
        stream = await conn.open_to_host(host_spec)
        if stream is None:
            writer.close()  # the host could not connect to its port: the app sees a closed socket
            return
        try:
            await pipe_socket(stream, reader, writer)
        finally:
            await stream.close()
