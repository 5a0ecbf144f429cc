"""The daemon killed with SIGKILL mid-flight loses nothing and sends nothing twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import free_port, timeout

N = 1000




def write_config(tmp_path: Path) -> tuple[Path, int]:
    api, agents = free_port(), free_port()
    path = tmp_path / "config.toml"
    path.write_text(f"""
[api]
listen = "127.0.0.1:{api}"
[agents]
listen = "127.0.0.1:{agents}"
[store]
path = "{tmp_path / 'data' / 'simbridge.db'}"
[[accounts]]
login = "user@email.com"
access_key = "your-access-key"
[[devices]]
id = "sim-1"
kind = "virtual"
account = "user@email.com"
max_per_minute = 0
latency = 0.005
jitter = 0.01
delivery_delay = 0.05
""")
    return path, api


def start(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``simbridge [extra…] run --config config``, its output appended to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", *extra, "run", "--config", str(config)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait(condition, within: float, what: str):
    deadline = time.monotonic() + timeout(within)
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def post(port: int, body: dict) -> list:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/sendsms", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout(30)) as resp:
        return json.loads(resp.read())


def api_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except OSError:
        return False


def radio_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "data" / "virtual-sim-1-radio.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def states(tmp_path: Path) -> dict[str, int]:
    db = sqlite3.connect(tmp_path / "data" / "simbridge.db")
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()


def test_sigkill_mid_flight_then_restart_delivers_each_message_exactly_once(tmp_path):
    config, port = write_config(tmp_path)
    log = tmp_path / "daemon.log"
    proc = start(config, log)
    try:
        wait(lambda: api_up(port), 20, "the API")
        ids = []
        for batch in range(4):
            answer = post(port, {"header": {"login": "user@email.com", "accessKey": "your-access-key"},
                                 "messages": [{"phone_number": "+33612345678", "message": f"crash test {batch}-{i}",
                                               "id_sms_api": f"crash-{batch}-{i}"}
                                              for i in range(N // 4)]})
            assert all(a["sent"] == 1 for a in answer)
            ids += [a["id_sms_api"] for a in answer]
        # Kill it hard while the phone is busy.
        wait(lambda: len(radio_lines(tmp_path)) >= 150, 30, "sends to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = len(radio_lines(tmp_path))
        assert killed_at < N, "the kill came too late to prove anything"
        before = states(tmp_path)
        assert sum(before.values()) == N  # every accepted message is in the store

        proc = start(config, log)
        wait(lambda: api_up(port), 20, "the API after restart")
        wait(lambda: states(tmp_path).get("delivered") == N, 120, "every message delivered")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    sent = [r["id_sms_api"] for r in radio_lines(tmp_path)]
    assert len(sent) == N, f"{len(sent)} transmissions for {N} messages (killed at {killed_at})"
    assert sorted(sent) == sorted(ids)  # each exactly once
    assert proc.returncode == 0, log.read_text()[-2000:]
