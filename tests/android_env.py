"""The real adb server (Debian's ``adb``) with virtual phones behind it, for the Android tests.

One adb server per test session, on a private port (never 5037), with its own
HOME (so its own adb key: a phone shows ``unauthorized`` until "Allow"): a
child of the test process (``adb nodaemon server``) that is stopped at the
end, and dies with the test process if that is killed. Each phone is a :class:`VirtualPhone` on its own loop in a
thread, attached with ``adb connect 127.0.0.1:PORT``, with its own loopback
address (the phone's 127.0.0.1) so that phones never share ports.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, make_config, timeout

from bridge.core.lifeline import guarded_argv
from device_agents.android.phone_sim.adb_host import AdbServer as SimAdbServer
from device_agents.android.phone_sim.phone import PhoneThread, VirtualPhone
from device_agents.android.phone_sim.smsgate import SmsGateApp
from device_agents.android.phone_sim.termux import install_termux

ACCOUNT = "user@email.com"
_loopbacks = itertools.count(10)


class AdbServer:
    def __init__(self) -> None:
        self.adb = shutil.which("adb")
        if self.adb is None:
            pytest.skip("the adb command is not installed (apt install adb)")
        self.home = tempfile.mkdtemp(prefix="adb-home-")
        self.port = free_port()
        self.env = dict(os.environ, HOME=self.home, ANDROID_ADB_SERVER_PORT=str(self.port))
        self.env.pop("ADB_VENDOR_KEYS", None)
        self.process = start_child_server(self.adb, self.port, self.env)

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([str(self.adb), "-P", str(self.port), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout(30), check=False, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"adb {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout + proc.stderr

    def connect(self, address: str) -> None:
        out = self.run("connect", address)
        # "failed to authenticate": attached, but the phone has not allowed this computer yet
        assert "connected" in out or "failed to authenticate" in out, out

    def disconnect(self, address: str) -> None:
        self.run("disconnect", address, check=False)

    def close(self) -> None:
        stop_child_server(self.process)
        shutil.rmtree(self.home, ignore_errors=True)


def start_child_server(adb: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``adb nodaemon server`` on ``port``: in the foreground, a child of this process that
    dies with it (bridge.core.lifeline), once it listens. ``adb start-server`` would fork a
    server off that outlives a test run stopped halfway (SIGTERM, pytest-timeout's exit)."""
    process = subprocess.Popen(guarded_argv([adb, "-P", str(port), "nodaemon", "server"]), env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Until it listens: an adb command that finds no server forks one off itself.
    deadline = time.monotonic() + timeout(20)
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_child_server(process)
            raise AssertionError(f"adb server on port {port} did not start")
        time.sleep(0.05)
    return process


def stop_child_server(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout(10))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ChildAdbServer(SimAdbServer):
    """The phone simulator's private adb server (phone_sim.adb_host), run as this process's
    child (:func:`start_child_server`) instead of with ``adb start-server``."""

    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildAdbServer:
        assert self.binary is not None
        self.process = start_child_server(self.binary, self.port, self.env)
        return self

    def close(self) -> None:
        try:
            stop_child_server(self.process)
        finally:
            super().close()  # its kill-server finds nobody; the HOME goes


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def adb_server() -> Iterator[AdbServer]:
    server = AdbServer()
    try:
        yield server
    finally:
        server.close()


class Phone:
    """A virtual phone in a thread, and what a test does with it."""

    def __init__(self, data_dir: Path, apps: tuple[str, ...]) -> None:
        loopback = f"127.0.0.{next(_loopbacks) % 240 + 10}"
        self.thread = PhoneThread(lambda: VirtualPhone(serial="SIMPHONE01", data_dir=data_dir, port=0,
                                                      loopback=loopback))
        self.phone = self.thread.phone
        self.smsgate: SmsGateApp | None = None
        self.termux: Any = None
        self.termux_api: Any = None
        if "smsgate" in apps:
            self.smsgate = SmsGateApp(self.phone, webhook_backoff=0.2)
            self.thread.do(lambda: self.phone.install(self.smsgate))  # type: ignore[arg-type]
        if "termux" in apps:
            self.termux, self.termux_api = self.thread.do(lambda: install_termux(self.phone))

    @property
    def address(self) -> str:
        return self.phone.address

    def do(self, fn: Any) -> Any:
        return self.thread.do(fn)

    def allow_usb_debugging(self) -> None:
        """Tap Allow once "Allow USB debugging?" is on screen. ``adb connect`` returns, and
        ``adb devices`` shows ``unauthorized``, from the phone's first AUTH token: the adb
        server sends its key (and the dialog pops up) a little later. A tap before that
        answers no dialog at all, and the phone stays unauthorised."""
        self.call(self.phone.usb_debugging_dialog(timeout(20)), 30)
        assert self.do(self.phone.allow_usb_debugging) == 1

    def call(self, coro: Any, limit_s: float = 30) -> Any:
        return self.thread.call(coro, timeout(limit_s))

    def close(self) -> None:
        self.thread.close()


@contextlib.contextmanager
def plugged(adb_server: AdbServer, data_dir: Path, apps: tuple[str, ...] = ("smsgate",)) -> Iterator[Phone]:
    phone = Phone(data_dir, apps)
    try:
        adb_server.connect(phone.address)
        yield phone
    finally:
        adb_server.disconnect(phone.address)
        phone.close()


def android_config(tmp_path: Path, adb_server: AdbServer, phone: Phone, **options: Any) -> Any:
    device = {"id": "p1", "kind": "android", "account": ACCOUNT, "serial": phone.address,
              "max_per_minute": 0, **options}
    return make_config(tmp_path, devices=[device],
                       android={"adb_server": f"127.0.0.1:{adb_server.port}", "start_adb_server": False,
                                "poll_interval": 0.2, "confirm_timeout": 10})
