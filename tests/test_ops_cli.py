"""`simbridge devices`, `simbridge doctor`, /metrics, and the logging policy."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import socket
from collections.abc import Iterator

import aiohttp
from aiohttp import web
from conftest import api_url, make_config, running, wait_until
from ops_util import ROOT, cli, json_lines, write_config

from bridge import config as config_module
from bridge.cli import devices_table
from bridge.ops import logs

CONTRACT = {"id", "kind", "account", "state", "reason", "signal", "battery", "last_seen"}


async def test_devices_json_and_table(tmp_path):
    path, _, _ = write_config(tmp_path)
    async with running(config_module.load(path)) as daemon:
        await wait_until(lambda: "sim-1" in daemon.dispatcher.sessions, what="sim-1 online")
        code, out, err = await cli("devices", "--config", str(path), "--json")
        assert code == 0, err
        rows = json.loads(out)
        assert isinstance(rows, list) and len(rows) == 1
        assert set(rows[0]) >= CONTRACT and rows[0]["id"] == "sim-1" and rows[0]["state"] == "online"
        code, out, err = await cli("devices", "--config", str(path))
        assert code == 0, err
        header, row = out.splitlines()[:2]
        assert header.split()[:5] == ["DEVICE", "NODE", "KIND", "ACCOUNT", "STATE"]
        assert row.split()[:5] == ["sim-1", daemon.node, "virtual", "user@email.com", "online"]
        assert "1 of 1 device(s) online" in out
    code, _, err = await cli("devices", "--config", str(path))
    assert code != 0 and "cannot reach the daemon" in err


def test_devices_table_formats_health():
    table = devices_table([{"id": "m1", "kind": "modem", "account": "a", "state": "offline", "signal": 55,
                            "battery": None, "network": "registered", "operator": "Orange",
                            "last_seen": 1000.0, "reason": "disconnected"}], now=1125.0)
    line = table.splitlines()[1]
    assert "55%" in line and "registered Orange" in line and "2 min ago" in line and line.endswith("disconnected")


async def test_doctor_all_good_with_a_running_daemon(tmp_path):
    path, _, _ = write_config(tmp_path)
    async with running(config_module.load(path)) as daemon:
        await wait_until(lambda: "sim-1" in daemon.dispatcher.sessions, what="sim-1 online")
        code, out, err = await cli("doctor", "--config", str(path))
    assert code == 0, out + err
    assert "held by the running simbridge" in out and "device sim-1: online" in out
    assert "FAIL" not in out


async def test_doctor_names_each_problem_and_what_to_do(tmp_path):
    devices = """
[[devices]]
id = "m-1"
kind = "modem"
account = "user@email.com"
port = "/dev/simbridge/modem-NOPE"

[[devices]]
id = "p-1"
kind = "android"
account = "user@email.com"
serial = "R58M123"
"""
    path, api, _ = write_config(tmp_path, devices=devices)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", api))
    squatter.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    adb_port = closed.getsockname()[1]  # bound, not listening: nothing answers there
    try:
        from ops_util import cli_env
        code, out, err = await cli("doctor", "--config", str(path),
                                   env=cli_env(ANDROID_ADB_SERVER_PORT=str(adb_port)))
    finally:
        squatter.close()
        closed.close()
    assert code == 1, out + err
    assert f"FAIL  port api: 127.0.0.1:{api} is in use by another program" in out
    assert f"-> find it with: ss -ltnp 'sport = :{api}'" in out
    assert "FAIL  modem m-1: /dev/simbridge/modem-NOPE does not exist" in out
    assert "adb server" in out and "adb start-server" in out
    assert "daemon: not running" in out
    assert "problem(s)" in out

    path.write_text(path.read_text().replace('port = "/dev/', 'prot = "/dev/'))
    code, out, _ = await cli("doctor", "--config", str(path))
    assert code == 1 and "devices[0].prot: unknown key" in out and "simbridge check-config" in out


async def test_metrics(tmp_path):
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.query_string)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = make_config(tmp_path, accounts=[{"login": "user@email.com", "access_key": "your-access-key",
                                              "webhook_url": f"http://127.0.0.1:{port}/hook"}])
    try:
        async with running(config) as daemon, aiohttp.ClientSession() as http:
            body = {"header": {"login": "user@email.com", "accessKey": "your-access-key"},
                    "messages": [{"phone_number": "+33612345678", "message": "hi", "priorite": 2}]}
            async with http.post(api_url(daemon, "/api/v1/sendsms"), json=body) as resp:
                assert (await resp.json())[0]["sent"]

            async def scrape() -> str:
                async with http.get(api_url(daemon, "/metrics")) as resp:
                    assert resp.status == 200 and resp.content_type == "text/plain"
                    return await resp.text()

            async def delivered() -> str | None:
                text = await scrape()
                return text if ('simbridge_jobs{priority="2",state="delivered"} 1.0' in text
                                and "simbridge_webhook_deliveries_total 2.0" in text
                                and 'job_states_total{device="sim-1",result="delivered"} 1.0' in text) else None

            text = await wait_until(delivered, within=15, what="a delivered job and its webhooks in /metrics")
    finally:
        await runner.cleanup()
    assert 'simbridge_jobs{priority="0",state="queued"} 0.0' in text
    assert 'simbridge_device_job_states_total{device="sim-1",result="sent"} 1.0' in text
    # A job reported delivered twice (the virtual phone does) is counted once.
    assert 'simbridge_device_job_states_total{device="sim-1",result="delivered"} 1.0' in text
    assert "simbridge_devices_online 1.0" in text
    assert 'simbridge_device_online{account="user@email.com",device="sim-1",kind="virtual"} 1.0' in text
    assert 'simbridge_device_battery_percent{device="sim-1"}' in text
    assert "simbridge_webhook_failures_total 0.0" in text
    assert "simbridge_webhook_latency_seconds_total" in text


# -- logs -------------------------------------------------------------------------


@contextlib.contextmanager
def capture(fmt: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """logs.setup() on the root logger, then the root logger as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.setup("DEBUG", fmt, stream=stream)
    try:
        yield logging.getLogger("bridge.test"), stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)


def test_numbers_are_masked_at_info_not_debug():
    with capture("text") as (log, stream):
        log.info("sms to %s and +44 7700 900123 (job 1700000000)", "+33612345678")
        log.debug("debug keeps +33612345678")
        logging.LoggerAdapter(log, {"device": "sim-1"}).warning("plain")
    lines = stream.getvalue().splitlines()
    assert "+336****5678" in lines[0] and "+447****0123" in lines[0] and "1700000000" in lines[0]
    assert "+33612345678" not in lines[0]
    assert "debug keeps +33612345678" in lines[1]
    assert lines[2].endswith("plain [device=sim-1]")


def test_json_log_lines():
    with capture("json") as (log, stream):
        log.info("sent to %s", "+33612345678", extra={"device_id": "sim-1", "job_id": "42"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    first, second = json_lines(stream.getvalue())
    assert first["level"] == "INFO" and first["logger"] == "bridge.test" and first["ts"].endswith("Z")
    assert first["message"] == "sent to +336****5678" and first["device"] == "sim-1" and first["job"] == "42"
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


SECRET_NAMES = ("token", "access_key", "accesskey", "secret", "password", "body", "text", "pin")


def test_no_bodies_keys_or_tokens_in_info_logs():
    """Arguments of INFO+ log calls in bridge/ and device_agents/ name no message
    body, key, token, secret or PIN."""
    offenders = []
    for path in sorted([*(ROOT / "bridge").rglob("*.py"), *(ROOT / "device_agents").rglob("*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("info", "warning", "error", "exception", "critical")):
                continue
            owner = ast.unparse(node.func.value)
            if not owner.endswith("log") and "logger" not in owner.lower() and "LoggerAdapter" not in owner:
                continue
            for arg in node.args[1:]:
                names = {n.id.lower() for n in ast.walk(arg) if isinstance(n, ast.Name)}
                names |= {n.attr.lower() for n in ast.walk(arg) if isinstance(n, ast.Attribute)}
                bad = [n for n in names if n in SECRET_NAMES]
                if bad:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(arg)}")
    assert not offenders, "\n".join(offenders)
