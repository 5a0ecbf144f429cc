"""systemd integration: the unit verifies, the udev rules are sane, and the real
daemon speaks the notify protocol (READY / WATCHDOG / RELOADING / STOPPING) to a
real datagram socket, reloads on SIGHUP and exits 0 quickly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request

import pytest
from conftest import timeout
from ops_util import ROOT, cli_env, json_lines, simbridge_cmd, write_config

from bridge.ops.notify import Notifier

UNIT = ROOT / "systemd" / "simbridge.service"
RULES = ROOT / "systemd" / "99-simbridge-modems.rules"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_has_what_the_service_needs():
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["User"] == ["simbridge"] and s["StateDirectory"] == ["simbridge"]
    assert {"dialout", "plugdev"} <= set(s["SupplementaryGroups"][0].split())
    for key, value in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                       ("ProtectHome", "yes")):
        assert s[key] == [value], key
    assert "-HUP" in s["ExecReload"][0] and "$MAINPID" in s["ExecReload"][0]
    assert re.fullmatch(r"\d+s", s["WatchdogSec"][0]) and re.fullmatch(r"\d+s", s["TimeoutStopSec"][0])
    # Room for every agent, API client and webhook connection: the distribution default (1,024)
    # is exhausted by a thousand idle connections on the agent port.
    assert int(s["LimitNOFILE"][0]) >= 65536
    assert "run --config /etc/simbridge/config.toml" in s["ExecStart"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart exists: point it at this checkout's command.
    exe = shutil.which("simbridge", path=str(ROOT / ".venv" / "bin")) or shutil.which("simbridge")
    if exe is None:
        pytest.skip("the simbridge command is not installed")
    unit = tmp_path / "simbridge.service"
    unit.write_text(UNIT.read_text().replace("/opt/simbridge/venv/bin/simbridge", exe))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=timeout(60))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_udev_rules_name_modems_stably():
    rules = [line for line in RULES.read_text().splitlines() if line.strip() and not line.startswith("#")]
    pair = re.compile(r'^\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|=|:=)\s*"[^"]*"\s*$')
    for rule in rules:
        if rule.startswith("LABEL="):
            continue
        for part in rule.split(", "):
            assert pair.match(part), f"not a udev key-value pair: {part!r} in {rule!r}"
    text = "\n".join(rules)
    assert 'SYMLINK+="simbridge/modem-$env{ID_SERIAL_SHORT}"' in text
    assert 'GROUP="dialout"' in text and 'MODE="0660"' in text
    labels = set(re.findall(r'LABEL="(\w+)"', text))
    assert set(re.findall(r'GOTO="(\w+)"', text)) <= labels


# -- the notify protocol ----------------------------------------------------------


def test_notifier_speaks_to_an_abstract_socket():
    name = f"simbridge-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        server.settimeout(timeout(5))
        notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000"})
        assert notifier.enabled and notifier.watchdog_interval == 2.0
        assert notifier.ready("up")
        lines = server.recv(4096).decode().split("\n")
        assert "READY=1" in lines and "STATUS=up" in lines
        assert notifier.stopping()
        assert server.recv(4096).decode().startswith("STOPPING=1")
        notifier.close()


def test_notifier_is_silent_outside_systemd():
    notifier = Notifier(environ={})
    assert not notifier.enabled and not notifier.ready("x") and notifier.watchdog_interval is None
    # A watchdog meant for another process is not ours to ping.
    assert Notifier(environ={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000",
                             "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None


async def test_watchdog_pings_only_while_healthy():
    name = f"simbridge-wd-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.setblocking(False)
    notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": str(int(timeout(0.1) * 1e6))})
    healthy = True

    async def check() -> None:
        if not healthy:
            raise RuntimeError("store does not answer")

    def drain() -> list[str]:
        got = []
        while True:
            try:
                got.append(server.recv(4096).decode())
            except BlockingIOError:
                return got

    loop = asyncio.get_running_loop()
    task = loop.create_task(notifier.watchdog_loop(check))
    try:
        deadline = time.monotonic() + timeout(5)
        seen: list[str] = []
        while seen.count("WATCHDOG=1") < 3:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.02)
            seen += drain()
        healthy = False
        await asyncio.sleep(timeout(0.12))  # one interval for a ping already on its way
        drain()
        unhealthy: list[str] = []
        deadline = time.monotonic() + timeout(5)
        while not any(m.startswith("STATUS=unhealthy") for m in unhealthy):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
            unhealthy += drain()
        # Three more intervals: still no ping.
        until = time.monotonic() + timeout(0.35)
        while time.monotonic() < until:
            await asyncio.sleep(0.02)
            unhealthy += drain()
        assert "WATCHDOG=1" not in unhealthy, unhealthy
    finally:
        task.cancel()
        server.close()
        notifier.close()


# -- the real daemon under a pretend systemd -------------------------------------


class NotifySocket:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sbn", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[list[str]] = []

    def wait_for(self, line: str, within: float = 20, after: int = 0) -> int:
        """Index of the first message (from ``after`` on) that has ``line``."""
        deadline = time.monotonic() + timeout(within)
        while True:
            for i in range(after, len(self.messages)):
                if line in self.messages[i]:
                    return i
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line} from the daemon; got {self.messages}")
            self.sock.settimeout(left)
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode().split("\n"))

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def get_json(url: str) -> object:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer your-access-key"})
    with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
        return json.loads(resp.read())


def devices(port: int) -> dict[str, dict]:
    return {d["id"]: d for d in get_json(f"http://127.0.0.1:{port}/api/v1/devices")["data"]}


def poll(condition, within: float, what: str):
    deadline = time.monotonic() + timeout(within)
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


VIRTUAL = """
[[devices]]
id = "{id}"
kind = "virtual"
account = "user@email.com"
max_per_minute = {rate}
latency = 0.0
delivery_delay = 0.0
"""


def test_daemon_notifies_reloads_on_sighup_and_stops_on_sigterm(tmp_path):
    config, api, _ = write_config(tmp_path, devices=VIRTUAL.format(id="sim-1", rate=0)
                                  + VIRTUAL.format(id="sim-gone", rate=0))
    notify = NotifySocket()
    log = tmp_path / "daemon.log"
    env = cli_env(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="400000")
    with open(log, "wb") as out:
        proc = subprocess.Popen(simbridge_cmd("--log-format", "json", "run", "--config", str(config)),
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        ready = notify.wait_for("READY=1")
        assert any(m.startswith("STATUS=serving") for m in notify.messages[ready])
        # READY means the API already answers and the listener is up.
        assert get_json(f"http://127.0.0.1:{api}/healthz") == {"status": "ok"}
        # The watchdog is pinged every WATCHDOG_USEC/2 after a health check.
        first = notify.wait_for("WATCHDOG=1", after=ready)
        notify.wait_for("WATCHDOG=1", after=first + 1)
        poll(lambda: devices(api)["sim-1"]["state"] == "online" and devices(api)["sim-gone"]["state"] == "online",
             20, "both devices online")

        # SIGHUP with a new file: sim-2 added, sim-gone removed, sim-1 changed (its rate) but kept.
        config.write_text(config.read_text().split("[[devices]]")[0] + VIRTUAL.format(id="sim-1", rate=10)
                          + VIRTUAL.format(id="sim-2", rate=0))
        mark = len(notify.messages)
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", after=mark)
        notify.wait_for("READY=1", after=reloading)
        poll(lambda: devices(api).get("sim-2", {}).get("state") == "online", 20, "sim-2 online after reload")
        assert set(devices(api)) == {"sim-1", "sim-2"}
        assert devices(api)["sim-1"]["state"] == "online"

        # A broken file is refused; the daemon carries on with what it has.
        good = config.read_text()
        config.write_text(good + "\n[[devices]]\nid = 3\n")
        mark = len(notify.messages)
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY=1", after=mark)
        assert set(devices(api)) == {"sim-1", "sim-2"}

        # Work in flight when SIGTERM comes is kept.
        body = {"header": {"login": "user@email.com", "accessKey": "your-access-key"},
                "messages": [{"phone_number": f"+336123456{i:02d}", "message": "hi"} for i in range(20)]}
        req = urllib.request.Request(f"http://127.0.0.1:{api}/api/v1/sendsms", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            assert all(r["sent"] for r in json.loads(resp.read()))
        mark = len(notify.messages)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout(15))
        took = time.monotonic() - started
        assert code == 0
        assert took < 10, f"took {took:.1f} s to stop"
        notify.wait_for("STOPPING=1", after=mark, within=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()

    records = json_lines(log.read_text())
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    connects = [r for r in records if r["message"].startswith("device sim-1 connected")]
    assert len(connects) == 1, "sim-1's session was dropped by the reload"
    assert any(r["message"].startswith("configuration reloaded") for r in records)
    assert any("reload refused" in r["message"] and r["level"] == "ERROR" for r in records)
    with sqlite3.connect(tmp_path / "data" / "simbridge.db") as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 20
