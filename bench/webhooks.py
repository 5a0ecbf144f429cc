"""Webhook delivery throughput, and sendsms acceptance while webhooks flow.

    python -m bench.webhooks [--events 20000] [--requests 60] [--batch 1000] [--json]

Three processes, so that two cores are used honestly:

- the daemon (this process): API, store, webhook deliverer — no devices;
- a webhook receiver (aiohttp, keep-alive) that parses every call as seed
  000's Flask example does (``json.loads(unquote(args['status']))``);
- a sendsms client that posts batches of ``--batch`` messages.

Phase 1 (drain): ``--events`` status events (sent + received for half as many
messages) are recorded in the outbox before the daemon starts; we time how
fast the deliverer empties it. Phase 2 (mixed): as many events again are
recorded while the client posts ``--requests`` sendsms requests; we time both.

Prints figures with the load average (``os.getloadavg()``) before and after,
since the machine's other work moves them; the daemon's CPU time per webhook
in phase 1 moves much less. Compare HTTP clients by that figure, run
alternately. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import aiohttp
import pycurl

from bridge import config as config_module
from bridge.core.events import SMS_DELIVERED, SMS_SENT
from bridge.daemon import Daemon
from bridge.store.model import OutboxEvent
from bridge.store.protocols import Outbox
from bridge.store.sqlite import SqliteStore
from bridge.webhooks.policy import WebhookPolicy

LOGIN = "bench@example.com"
KEY = "bench-access-key"
SECRET = "bench-secret"


# ----------------------------------------------------------------------------
# The receiver process


def _receiver_main(conn: Any, signed: bool) -> None:
    from aiohttp import web

    count = 0

    async def insim(request: web.Request) -> web.Response:
        nonlocal count
        args = parse_qs(request.query_string)
        for param in ("message", "calls", "status", "clics", "qualification"):
            if param in args:
                json.loads(unquote(args[param][0]))
        count += 1
        return web.Response(text="OK")

    async def posted(request: web.Request) -> web.Response:
        nonlocal count
        import hashlib
        import hmac
        raw = await request.read()
        ts = request.headers["X-Simbridge-Timestamp"]
        expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["X-Simbridge-Signature"]):
            return web.Response(status=401)
        json.loads(raw)
        count += 1
        return web.Response(text="OK")

    async def counter(request: web.Request) -> web.Response:
        return web.json_response({"count": count})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/webhook", insim)
        app.router.add_post("/webhook", posted)
        app.router.add_get("/count", counter)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        conn.send(runner.addresses[0][1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        await runner.cleanup()

    asyncio.run(main())


# ----------------------------------------------------------------------------
# The sendsms client process


def _client_main(conn: Any, url: str, requests: int, batch: int) -> None:
    async def main() -> None:
        bodies = []
        for r in range(requests):
            messages = [{"phone_number": f"+336{(r * batch + i) % 100000000:08d}",
                         "message": f"Bench message {r}-{i}: your appointment is confirmed."}
                        for i in range(batch)]
            bodies.append(json.dumps({"header": {"login": LOGIN, "accessKey": KEY},
                                      "messages": messages}).encode())
        conn.send("ready")
        conn.recv()  # go
        accepted = 0
        latencies = []
        async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
            async def stream(mine: list[bytes]) -> None:
                nonlocal accepted
                for body in mine:
                    t = time.perf_counter()
                    async with http.post(url, data=body) as resp:
                        answer = await resp.json()
                        if resp.status != 200:
                            raise SystemExit(f"sendsms answered {resp.status}: {answer}")
                    latencies.append(time.perf_counter() - t)
                    accepted += sum(1 for a in answer if a.get("sent") == 1)

            started = time.perf_counter()
            # Two requests in flight, as bench.pipeline's clients: one is validated
            # while the other's batch is committed.
            await asyncio.gather(stream(bodies[0::2]), stream(bodies[1::2]))
            elapsed = time.perf_counter() - started
        latencies.sort()
        conn.send({"accepted": accepted, "seconds": elapsed,
                   "p50_ms": latencies[len(latencies) // 2] * 1000,
                   "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000})

    asyncio.run(main())


# ----------------------------------------------------------------------------
# The daemon side


async def seed(store: Outbox, count: int, start: int) -> None:
    events: list[OutboxEvent] = []
    for i in range(start, start + count // 2):
        ident = f"bench{i:010d}"
        payload = {"id_sms_api": ident, "phone_number": f"+336{i % 100000000:08d}", "device_id": "bench",
                   "parts": 1}
        events.append(OutboxEvent(LOGIN, SMS_SENT, ident, dict(payload, state="sent")))
        events.append(OutboxEvent(LOGIN, SMS_DELIVERED, ident, dict(payload, state="delivered")))
    await store.record_events(events)


async def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    recv_parent, recv_child = ctx.Pipe()
    receiver = ctx.Process(target=_receiver_main, args=(recv_child, args.json), daemon=True)
    receiver.start()
    port = recv_parent.recv()
    hook = f"http://127.0.0.1:{port}/webhook"
    data_dir = Path(tempfile.mkdtemp(prefix="simbridge-bench-webhooks-"))
    account: dict[str, Any] = {"login": LOGIN, "access_key": KEY, "webhook_url": hook}
    if args.json:
        account.update(webhook_format="json", webhook_secret=SECRET)
    config = config_module.parse({
        "api": {"listen": "127.0.0.1:0", "timezone": "UTC"},
        "agents": {"listen": "127.0.0.1:0"},
        "store": {"path": str(data_dir / "simbridge.db"), "synchronous": args.synchronous},
        "webhooks": {"concurrency": args.concurrency},
        "accounts": [account],
    }, source="bench")
    n = args.events

    # Phase 1: a backlog recorded before the daemon starts (a receiver that was down).
    store = SqliteStore(config.store.path, event_filter=WebhookPolicy(config), synchronous=args.synchronous)
    await store.open()
    await seed(store, n, 0)
    await store.close()

    load_before = os.getloadavg()
    http_client = " ".join(pycurl.version.split()[:2])
    print(f"load average before: {_load(load_before)} ({os.cpu_count()} cores); webhook client {http_client}")
    daemon = Daemon(config, eager_workers=True)  # as `simbridge run` starts it
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_for(daemon.ready.is_set, 30, "daemon ready")
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    receiver_cpu0 = _process_cpu(receiver.pid)
    await wait_for(lambda: daemon.webhooks.stats.delivered >= n, 300, "phase 1 deliveries")
    drain_s = time.perf_counter() - t0
    cpu_us = (time.process_time() - cpu0) / n * 1e6
    receiver_us = (_process_cpu(receiver.pid) - receiver_cpu0) / n * 1e6
    drain_rate = n / drain_s
    print(f"phase 1: {n} webhooks delivered in {drain_s:.2f} s = {drain_rate:,.0f}/s "
          f"({'signed JSON POST' if args.json else 'inSIM GET'}, concurrency {args.concurrency}); "
          f"daemon CPU {cpu_us:.0f} µs a webhook, receiver CPU {receiver_us:.0f} µs a request")

    # Phase 2: sendsms batches while another backlog drains.
    client_parent, client_child = ctx.Pipe()
    url = f"http://127.0.0.1:{daemon.api_port}/api/v1/sendsms"
    client = ctx.Process(target=_client_main, args=(client_child, url, args.requests, args.batch), daemon=True)
    client.start()
    await asyncio.get_running_loop().run_in_executor(None, client_parent.recv)  # bodies built
    before = daemon.webhooks.stats.delivered
    assert isinstance(daemon.store, SqliteStore)
    await seed(daemon.store, n, n)
    t1 = time.perf_counter()
    client_parent.send("go")
    result = await asyncio.get_running_loop().run_in_executor(None, client_parent.recv)
    accept_s = time.perf_counter() - t1
    during = daemon.webhooks.stats.delivered - before
    await wait_for(lambda: daemon.webhooks.stats.delivered >= 2 * n, 300, "phase 2 deliveries")
    mixed_s = time.perf_counter() - t1
    accept_rate = result["accepted"] / result["seconds"]
    during_rate = during / accept_s
    mixed_rate = n / mixed_s
    print(f"phase 2: sendsms accepted {result['accepted']:,} messages in {result['seconds']:.2f} s = "
          f"{accept_rate:,.0f}/s ({args.batch} a request; p50 {result['p50_ms']:.0f} ms, "
          f"p99 {result['p99_ms']:.0f} ms)")
    print(f"         webhooks meanwhile: {during:,} in {accept_s:.2f} s = {during_rate:,.0f}/s; "
          f"whole backlog of {n} in {mixed_s:.2f} s = {mixed_rate:,.0f}/s")
    stats = daemon.webhooks.stats
    mean_latency = stats.latency_seconds / stats.delivered if stats.delivered else 0.0
    mean_request_ms = stats.request_seconds / stats.requests * 1000 if stats.requests else 0.0
    print(f"         requests {stats.requests:,}, failed attempts {stats.failed_attempts}, "
          f"mean request {mean_request_ms:.2f} ms")

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/count") as resp:
        received = (await resp.json())["count"]
    counts = await daemon.store.outbox_counts()
    stop.set()
    await task
    recv_parent.send("stop")
    receiver.join(10)
    client.join(10)
    load_after = os.getloadavg()
    print(f"load average after: {_load(load_after)}")
    if received < 2 * n:
        raise SystemExit(f"receiver got {received} webhooks, expected {2 * n}")
    return {"bench": "webhooks", "form": "json" if args.json else "insim", "cores": os.cpu_count(),
            "synchronous": args.synchronous, "concurrency": args.concurrency,
            "events": n, "webhooks_per_s": round(drain_rate), "webhooks_per_s_while_accepting": round(during_rate),
            "accepted_per_s": round(accept_rate), "accepted": result["accepted"], "batch": args.batch,
            "sendsms_p50_ms": round(result["p50_ms"], 1), "sendsms_p99_ms": round(result["p99_ms"], 1),
            "received": received, "outbox": counts, "mean_event_latency_s": round(mean_latency, 3),
            "failed_attempts": stats.failed_attempts, "daemon_cpu_us_per_webhook": round(cpu_us),
            "receiver_cpu_us_per_request": round(receiver_us),
            "client": http_client,
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
            "targets_met": drain_rate >= 5000 and during_rate >= 2000 and accept_rate >= 10000}


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of another process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in avg) + " (1, 5, 15 min)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="webhook events per phase")
    parser.add_argument("--requests", type=int, default=60, help="sendsms requests in phase 2")
    parser.add_argument("--batch", type=int, default=1000, help="messages per sendsms request")
    parser.add_argument("--concurrency", type=int, default=32, help="[webhooks] concurrency")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full", help="[store] synchronous")
    parser.add_argument("--json", action="store_true", help="signed JSON POST form instead of inSIM GET")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
