"""The I/O edges of the virtual modem: the pseudo-terminal and the control socket.

:class:`PtyPort` only moves bytes. :func:`serve_control` answers JSON-lines
requests on a unix socket (docs/modem.md lists them) by calling the modem's
public control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

log = logging.getLogger("device_agents.modem.virtual_modem")


class PtyPort:
    """A pty whose master side the loop watches, and a symlink to its slave.

    Only moves bytes: ``on_data`` gets what the driver wrote, :meth:`write`
    queues what the modem says. The slave is set raw at once (no line
    discipline echo before a driver opens it) and kept open by us, so a
    driver closing the port never hangs up the master. Writes that would
    block wait for ``add_writer``; the queue keeps the newest 256 KiB, like a
    UART overrun when nobody reads.
    """

    MAX_QUEUE: Final = 256 * 1024

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, link: Path | None, on_data: Callable[[bytes], None]
    ) -> None:
        self._loop = loop
        self.link = link
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self._out = bytearray()
        self._writer_on = False
        self.name: str | None = None

    def open(self) -> str:
        if self.link is not None and self.link.exists() and not self.link.is_symlink():
            raise FileExistsError(f"{self.link} exists and is not a symlink: not replacing it")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        for fd in (master, slave):
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self._master, self._slave = master, slave
        self.name = os.ttyname(slave)
        if self.link is not None:  # atomically (re)point the link
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(self.name, tmp)
            os.replace(tmp, self.link)
        self._loop.add_reader(master, self._readable)
        return self.name

    def close(self) -> None:
        if self._master is not None:
            self._loop.remove_reader(self._master)
            if self._writer_on:
                self._loop.remove_writer(self._master)
                self._writer_on = False
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._out.clear()
        if self.link is not None:
            with contextlib.suppress(OSError):
                if self.link.is_symlink() and os.readlink(self.link) == self.name:
                    self.link.unlink()

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                log.warning("pty read failed: %s", exc)
            return
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        if self._master is None:
            return
        self._out += data
        if len(self._out) > self.MAX_QUEUE:
            del self._out[: len(self._out) - self.MAX_QUEUE]
        self._flush()

    def _flush(self) -> None:
        assert self._master is not None
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("pty write failed: %s", exc)
                self._out.clear()
                break
            del self._out[:n]
        if self._out and not self._writer_on:
            self._loop.add_writer(self._master, self._flush)
            self._writer_on = True
        elif not self._out and self._writer_on:
            self._loop.remove_writer(self._master)
            self._writer_on = False


class Controllable(Protocol):
    def control(self, request: dict[str, Any]) -> dict[str, Any]: ...


async def serve_control(modem: Controllable, path: str | os.PathLike[str]) -> asyncio.AbstractServer:
    """Listen for JSON-lines control requests on a unix socket at ``path``."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError as exc:
                    answer: dict[str, Any] = {"ok": False, "error": f"bad JSON: {exc}"}
                else:
                    answer = modem.control(request)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):  # ValueError: a line over the reader limit
            pass
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(session, path=os.fspath(path), limit=64 * 1024)


def run_control(modem: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One control request (docs/modem.md) against the modem's public API."""
    if not isinstance(request, dict):
        raise TypeError("a request is a JSON object")
    cmd = request.get("cmd")
    if cmd == "incoming_sms":
        sender, text = request["from"], request["text"]
        if not isinstance(sender, str) or not isinstance(text, str):
            raise TypeError("from and text must be strings")
        return {"parts": modem.incoming_sms(sender, text)}
    if cmd == "call":
        duration = request.get("duration")
        missed = bool(request.get("missed", duration is None))
        if duration is not None:
            duration = float(duration)
        modem.call(str(request["from"]), missed=missed, duration=duration)
        return {}
    if cmd == "fault":
        kinds = [k for k in ("garbage", "reboot", "slow", "unplug") if k in request]
        if len(kinds) != 1:
            raise ValueError("fault takes exactly one of garbage, reboot, slow, unplug")
        kind, value = kinds[0], request[kinds[0]]
        if kind == "garbage":
            modem.fault_garbage(64 if value is True else int(value))
        elif kind == "reboot":
            modem.fault_reboot()
        elif kind == "slow":
            modem.fault_slow(float(value))
        else:
            modem.fault_unplug(float(value))
        return {}
    if cmd == "state":
        return {"state": modem.snapshot()}
    raise ValueError(f"unknown cmd {cmd!r}")
