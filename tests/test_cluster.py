"""Several daemons on one PostgreSQL queue, as real processes
(``python -m bridge.cli run --config …``) with virtual phones spread over
them: one is SIGKILLed mid-flight and its phones come back on another box
(their journals and radio logs move with them). Every message reaches the
radio exactly once (counted from the radio logs), every webhook event reaches
the receiver, per-message order holds across the cluster, nothing is lost."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from conftest import free_port, timeout, wait_until
from pg_util import new_schema, pg_database  # noqa: F401 - the session's database fixture

LOGIN = "user@email.com"
KEY = "your-access-key"
SECRET = "cluster-webhook-secret"
MESSAGES = 240
ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """The customer's webhook endpoint: every event as it arrives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _hook(self, request: web.Request) -> web.Response:
        self.events.append(json.loads(await request.read()))
        return web.Response(text="OK")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def write_config(folder: Path, *, node: str, url: str, hook: str, phones: list[str]) -> tuple[Path, int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    devices = "".join(
        f'[[devices]]\nid = "{p}"\nkind = "virtual"\naccount = "{LOGIN}"\nlatency = 0.02\njitter = 0.03\n'
        f"delivery_delay = 0.05\nmax_per_minute = 0\n\n" for p in phones)
    text = (f'[api]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n\n'
            f'[agents]\nlisten = "127.0.0.1:{free_port()}"\nlease_s = 2\n'
            # Long enough for the killed box's phones to come back on another box (a process start).
            f"requeue_grace_s = {timeout(30):g}\n\n"
            f'[store]\npath = "{folder / "simbridge.db"}"\nurl = "{url}"\nnode = "{node}"\n\n'
            f"[webhooks]\nbackoff_initial = 0.1\nbackoff_max = 1\npoll_interval = 2\ntimeout = 2\nlease = 3\n\n"
            f'[[accounts]]\nlogin = "{LOGIN}"\naccess_key = "{KEY}"\nwebhook_url = "{hook}"\n'
            f'webhook_format = "json"\nwebhook_secret = "{SECRET}"\n\n' + devices)
    path = folder / f"{node}.toml"
    path.write_text(text)
    return path, port


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(config)],
                            cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def healthy(http: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


def radio(folders: list[Path]) -> list[dict[str, Any]]:
    out = []
    for folder in folders:
        for path in folder.glob("virtual-*-radio.jsonl"):
            out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


@pytest.fixture
async def url(pg_database):  # noqa: F811 - the fixture imported above
    return await new_schema(pg_database)


async def test_three_daemons_one_killed_every_message_once_every_event_delivered(tmp_path, url):
    receiver = Receiver()
    await receiver.start()
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    boxes = {"n1": ["p1a", "p1b"], "n2": ["p2a", "p2b"], "n3": ["p3a", "p3b"]}
    folders = {node: tmp_path / node for node in boxes}
    configs = {node: write_config(folders[node], node=node, url=url, hook=hook, phones=phones)
               for node, phones in boxes.items()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        async with aiohttp.ClientSession() as http:
            for node, (config, _) in configs.items():
                procs[node] = start(config, tmp_path / f"{node}.log")
            for node, (_, port) in configs.items():
                await wait_until(lambda port=port: healthy(http, port), within=30, what=f"{node} up")
            # Accepted by every daemon's API in turn (any daemon serves the API).
            ports = [port for _, port in configs.values()]
            keys = []
            for i in range(0, MESSAGES, 40):
                async with http.post(f"http://127.0.0.1:{ports[(i // 40) % 3]}/api/v1/sendsms", json={
                        "header": {"login": LOGIN, "accessKey": KEY},
                        "messages": [{"phone_number": f"+3361234{n:04d}", "message": f"m{n}"}
                                     for n in range(i, i + 40)]}) as resp:
                    assert resp.status == 200
                    keys += [m["id_sms_api"] for m in await resp.json()]
            assert len(set(keys)) == MESSAGES
            # Mid-flight: box n1's phones have sent some and hold more.
            await wait_until(lambda: len(radio([folders["n1"]])) >= 5, within=30, what="n1 sending")
            procs["n1"].send_signal(signal.SIGKILL)
            procs["n1"].wait(timeout(10))
            # Its phones are plugged into another box (n4), journals and radio logs with them.
            config4 = folders["n1"] / "n4.toml"
            config4.write_text((folders["n1"] / "n1.toml").read_text().replace('node = "n1"', 'node = "n4"')
                               .replace(f":{configs['n1'][1]}", f":{free_port()}"))
            procs["n4"] = start(config4, tmp_path / "n4.log")

            conn = await asyncpg.connect(url)
            try:
                async def settled() -> bool:
                    left = await conn.fetchval("SELECT COUNT(*) FROM jobs WHERE state <> 'delivered'")
                    pending = await conn.fetchval("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
                    return left == 0 and pending == 0
                await wait_until(settled, within=60, every=0.2, what="every job delivered, every event sent")
                outbox = {f"evt_{r['id']}": r for r in await conn.fetch(
                    "SELECT id, order_key, kind, dead FROM outbox ORDER BY id")}
                jobs = {r["id"] for r in await conn.fetch("SELECT id FROM jobs")}
            finally:
                await conn.close()
        # Exactly once on the radio, across the four boxes' logs.
        sent = collections.Counter(int(r["job_id"].partition(".")[0]) for r in radio(list(folders.values())))  # "<id>.<incarnation>"
        assert set(sent) == jobs and len(jobs) == MESSAGES
        assert [j for j, n in sent.items() if n != 1] == []
        # Every recorded event reached the receiver (at least once), none dead.
        got = {e["event_id"] for e in receiver.events}
        assert got == set(outbox) and not any(r["dead"] for r in outbox.values())
        # Per message, events first arrived in the order they were recorded, whichever daemon sent them.
        first: dict[str, list[int]] = collections.defaultdict(list)
        seen: set[str] = set()
        for e in receiver.events:
            if e["event_id"] not in seen:
                seen.add(e["event_id"])
                first[outbox[e["event_id"]]["order_key"]].append(int(e["event_id"][4:]))
        assert all(ids == sorted(ids) for ids in first.values())
        # The kill happened mid-flight: the survivors and n4 carried on.
        by_box = {node: len(radio([folders[node]])) for node in boxes}
        assert all(n > 0 for n in by_box.values()), by_box
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout(15))
            except subprocess.TimeoutExpired:
                proc.kill()
        await receiver.stop()
