"""The adb server, from asyncio: device tracking and one phone's shell, forwards and reverses.

adbutils blocks, so every call runs in a thread (``asyncio.to_thread``).
Shell commands use the shell v2 protocol (AOSP ``adb/daemon/shell_service.cpp``;
exit code and stderr apart from stdout) when the phone offers the
``shell_v2`` feature, as every phone since Android 7 does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import adbutils

from bridge.core.lifeline import guarded_argv

from .content import ContentError, ids_match, parse_rows, query_argv


class _Connection(adbutils.AdbConnection):
    """adbutils' connection, minus its habit of spawning ``adb start-server``
    whenever a connect fails: restarting the server is the supervisor's call."""

    def _safe_connect(self):  # noqa: ANN202 - adbutils' own signature
        return self._create_socket()


class Client(adbutils.AdbClient):
    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        conn = _Connection(self.host, self.port)
        if timeout:
            conn.conn.settimeout(timeout)
        return conn


@dataclass(frozen=True, slots=True)
class Shell:
    """What one shell command gave."""
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def text(self) -> str:
        return (self.stdout + ("\n" + self.stderr if self.stderr else "")).strip()

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "Exception" not in self.text and not self.text.startswith("Error")


class Phone:
    """One phone through the adb server (serial as ``adb devices`` shows it)."""

    def __init__(self, client: Client, serial: str, *, timeout: float = 30.0) -> None:
        self.client = client
        self.serial = serial
        self.timeout = timeout
        self._device = client.device(serial)

    def _shell_sync(self, argv: list[str], timeout: float) -> Shell:
        result: Any = self._device.shell2(argv, timeout=timeout, v2=True)
        return Shell(result.returncode, result.stdout or result.output or "", result.stderr or "")

    async def shell(self, *argv: str, limit_s: float | None = None) -> Shell:
        return await asyncio.to_thread(self._shell_sync, list(argv), limit_s or self.timeout)

    async def query(self, uri: str, columns: tuple[str, ...], where: str | None = None
                    ) -> list[dict[str, str | None]]:
        """Rows of a content provider, read as the shell user (see :mod:`.content`)."""
        result = await self.shell(*query_argv(uri, columns, where))
        # Content.java prints a provider's refusal on stderr ("Error while accessing
        # provider:…" and the exception), possibly with exit status 0: no rows and
        # something on stderr is an error, not an empty table.
        if result.returncode != 0 or (not result.stdout.strip() and result.stderr.strip()):
            raise ContentError(result.text[:300] or f"content query exited {result.returncode}")
        rows = parse_rows(result.stdout, columns)
        if len(columns) == 1:
            return rows
        ids = await self.query(uri, ("_id",), where)
        if ids_match(rows, ids):
            return rows
        # A text imitated a row marker: read the rows one by one.
        out = []
        for row in ids:
            one = await self.shell(*query_argv(uri, columns, f"_id={int(row['_id'] or -1)}"))
            out += parse_rows(one.stdout, columns, single=True)
        return out

    async def getprop(self, name: str) -> str:
        return (await self.shell("getprop", name)).stdout.strip()

    async def packages(self) -> set[str]:
        result = await self.shell("pm", "list", "packages")
        return {line.partition(":")[2].strip() for line in result.stdout.splitlines() if line.startswith("package:")}

    async def forward(self, remote_port: int) -> int:
        """``adb forward tcp:<free> tcp:<remote_port>``; the local port."""
        def run() -> int:
            for item in self._device.forward_list():
                if item.remote == f"tcp:{remote_port}" and item.local.startswith("tcp:"):
                    return int(item.local[4:])
            return int(self._device.forward_port(remote_port))
        return await asyncio.to_thread(run)

    async def reverse(self, remote_port: int, local_port: int) -> None:
        """``adb reverse tcp:<remote_port> tcp:<local_port>`` (the phone's loopback to ours)."""
        await asyncio.to_thread(self._device.reverse, f"tcp:{remote_port}", f"tcp:{local_port}")

    async def push(self, data: bytes, path: str, mode: int = 0o644) -> None:
        await asyncio.to_thread(self._device.sync.push, data, path, mode)

    async def remove_forwards(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._device.forward_remove_all)


def track(client: Client) -> adbutils.AdbConnection:
    """An open ``host:track-devices`` connection (blocking; read with ``read_string_block``)."""
    conn = client.make_connection()
    conn.conn.settimeout(None)
    conn.send_command("host:track-devices")
    conn.check_okay()
    return conn


def parse_devices(text: str) -> dict[str, str]:
    """serial -> state (``device``, ``unauthorized``, ``offline``…) from a track-devices block."""
    out = {}
    for line in text.splitlines():
        serial, _, state = line.strip().partition("\t")
        if serial:
            out[serial] = state.strip()
    return out


async def start_server(port: int) -> asyncio.subprocess.Process:
    """A local adb server on ``port``, as a child of the daemon that dies with
    it (``adb nodaemon server``: in the foreground, not forked off as ``adb
    start-server`` does; bridge.core.lifeline). Call it from the event loop.
    Source: AOSP adb/client/commandline.cpp — ``nodaemon server`` runs the server in the
    calling process; ``start-server`` launches a ``fork-server`` child that outlives it."""
    env = dict(os.environ, ANDROID_ADB_SERVER_PORT=str(port))
    return await asyncio.create_subprocess_exec(
        *guarded_argv([adbutils.adb_path(), "-P", str(port), "nodaemon", "server"]), env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_server(proc: asyncio.subprocess.Process | None, grace_s: float = 5.0) -> None:
    """Stop an adb server :func:`start_server` started (SIGTERM, then SIGKILL)."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
