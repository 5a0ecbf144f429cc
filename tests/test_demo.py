"""`simbridge run --demo` as a newcomer uses it: the printed curl line works end to end."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import timeout


def read_until(proc: subprocess.Popen, marker: str, within: float) -> str:
    deadline = time.monotonic() + timeout(within)
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"never printed {marker!r}; output:\n{''.join(seen)}")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True, text=True,
                          timeout=timeout(30))


@pytest.mark.skipif(shutil.which("curl") is None, reason="the demo prints a curl line; curl is needed")
def test_demo_curl_line_sends_an_sms_that_is_delivered(tmp_path):
    data = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--demo", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        curl = read_until(proc, "curl -s -X POST", 30).strip()
        answer = json.loads(subprocess.run(["bash", "-c", curl], capture_output=True, text=True,
                                           timeout=timeout(30), check=True).stdout)
        assert answer[0]["sent"] == 1 and answer[0]["user"] == "demo@example.com"
        sms_id = answer[0]["id_sms_api"]
        req = urllib.request.Request(f"http://127.0.0.1:8080/api/v1/sms/{sms_id}",
                                     headers={"Authorization": "Bearer demo-access-key"})
        deadline = time.monotonic() + timeout(20)
        while True:
            with urllib.request.urlopen(req) as resp:
                status = json.loads(resp.read())["data"]["state"]
            if status == "delivered" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == "delivered"
        radio = [json.loads(line) for line in (data / "virtual-virtual-1-radio.jsonl").read_text().splitlines()]
        assert [r["id_sms_api"] for r in radio] == [sms_id]

        # The other commands find the demo daemon through the config it wrote.
        config = str(data / "config.toml")
        done = cli("simulate", "incoming-sms", "--config", config, "--from", "+33612345678", "Hi there")
        assert done.returncode == 0, done.stderr
        done = cli("simulate", "call", "--config", config, "--from", "+33612345678", "--missed")
        assert done.returncode == 0, done.stderr
        done = cli("devices", "--config", config, "--json")
        assert done.returncode == 0, done.stderr
        [device] = json.loads(done.stdout)
        assert {k: device[k] for k in ("id", "kind", "account", "state")} == {
            "id": "virtual-1", "kind": "virtual", "account": "demo@example.com", "state": "online"}
        assert {"reason", "signal", "battery", "last_seen"} <= set(device)
        db = sqlite3.connect(data / "simbridge.db")
        deadline = time.monotonic() + timeout(10)
        while time.monotonic() < deadline:
            inbound = db.execute("SELECT sender, text FROM inbound_sms").fetchall()
            calls = db.execute("SELECT direction, number FROM call_events").fetchall()
            if inbound and calls:
                break
            time.sleep(0.05)
        db.close()
        assert inbound == [("+33612345678", "Hi there")]
        assert calls == [("missed", "+33612345678")]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout(15))
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0


def test_simulate_without_a_daemon_says_so(tmp_path):
    from bridge.config import DEMO_TOML
    path = tmp_path / "config.toml"
    path.write_text(DEMO_TOML.format(store=tmp_path / "x.db").replace("8080", "1"))
    done = cli("simulate", "incoming-sms", "--config", str(path), "--from", "+33612345678", "x")
    assert done.returncode != 0
    assert "cannot reach the daemon" in done.stderr
