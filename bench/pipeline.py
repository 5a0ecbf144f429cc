"""Pipeline benchmark: ``python -m bench.pipeline [--quick]``.

Runs the real daemon in a process of its own (durable store: SQLite WAL,
synchronous=FULL), 20 virtual phones with instant radios in a second process
(as standalone agents over real websockets), and the HTTP client here. It
prints its figures, the last line one JSON object:

- ``accepted_per_s``: messages accepted per second by bulk sendsms, 1,000 a
  request, two requests in flight, for an account with no phone online
  (acceptance alone); the requests are written before the clock starts (as
  the plain inserts' rows are) and every answer is read and checked. Three
  rounds, each right after its own plain inserts (below): the figures are the
  rounds' medians, and ``accepted_vs_sqlite_pct`` the median of each round's
  ratio to the inserts just before it (on a machine whose speed drifts, a
  ratio of neighbours, not of two lone measurements seconds apart);
- ``e2e_per_s``: messages per second from the first request to the last
  delivery report, 20 phones online; beside it the CPU a message cost the
  phones' process and the daemon (``phones_cpu_us_per_job``,
  ``daemon_cpu_us_per_job``: load-independent, unlike the rate);
- ``p99_priority_dispatch_ms``: priority-2 messages sent one by one behind a
  100,000-message priority-0 backlog: from the request to the phone's radio;
- beside them, the limits they approach, measured in the same run:
  ``sqlite_durable_inserts_per_s`` (plain sqlite3, same durability, 1,000
  rows a transaction, as many rows as a round accepts, the median of the
  three) and ``ws_roundtrips_per_s`` (plain websockets echo over 20
  connections, server in another process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

PHONES = 20
BULK = 1000
WINDOW = int(os.environ.get("BENCH_WINDOW", "8"))  # [agents] window: the default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def numbers(count: int, start: int = 0) -> list[str]:
    # Distinct, valid French mobile numbers: no cache helps the validator.
    return [f"+336{(start + i) % 100_000_000:08d}" for i in range(count)]


# -- the limits --------------------------------------------------------------------


def sqlite_durable_inserts(folder: Path, rows: int, name: str = "plain.db") -> float:
    db = sqlite3.connect(folder / name, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, account TEXT, id_sms_api TEXT, phone_number TEXT, "
               "message TEXT, priority INTEGER, due REAL, state TEXT, created REAL, UNIQUE (account, id_sms_api))")
    nums = numbers(rows)
    start = time.perf_counter()
    for base in range(0, rows, BULK):
        now = time.time()
        db.execute("BEGIN")
        db.executemany("INSERT INTO jobs (account, id_sms_api, phone_number, message, priority, due, state, created) "
                       "VALUES ('a', ?, ?, 'Bench message text', 0, ?, 'queued', ?)",
                       [(f"id{base + i}", nums[base + i], now, now) for i in range(min(BULK, rows - base))])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    os.sync()  # its pages written out now, not by the kernel while the daemon is measured
    return rows / elapsed


ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


async def ws_roundtrips(seconds: float) -> float:
    import websockets
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)],  # noqa: ASYNC220
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        frame = json.dumps({"type": "events", "events": [{"kind": "job_state", "event_id": "1", "job_id": "1",
                                                          "state": "sent", "at": 1.0}]})
        count = 0
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal count
            async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
                while time.perf_counter() < deadline:
                    await ws.send(frame)
                    await ws.recv()
                    count += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(PHONES)))
        return count / (time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait()


# -- the daemon --------------------------------------------------------------------


def write_config(folder: Path, api: int, agents: int) -> Path:
    lines = [f'[api]\nlisten = "127.0.0.1:{api}"\n', f'[agents]\nlisten = "127.0.0.1:{agents}"\nwindow = {WINDOW}\n',
             f'[store]\npath = "{folder / "data" / "simbridge.db"}"\nsynchronous = "full"\n']
    for login in ("bulk@example.com", "e2e@example.com"):
        lines.append(f'[[accounts]]\nlogin = "{login}"\naccess_key = "key-{login}"\n')
    for i in range(PHONES):
        lines.append(f'[[devices]]\nid = "phone-{i}"\nkind = "virtual"\naccount = "e2e@example.com"\n'
                     f'standalone = true\ntoken = "token-{i}"\nmax_per_minute = 0\n')
    path = folder / "config.toml"
    path.write_text("\n".join(lines))
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``): what
    it cost, whatever else the machine was doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def header(login: str) -> dict[str, str]:
    return {"login": login, "accessKey": f"key-{login}"}


def bulk_body(login: str, nums: list[str], *, priority: int = 1, prefix: str = "") -> bytes:
    """A sendsms request of one message to each number, encoded."""
    messages = [{"phone_number": n, "message": f"Bench message {i}", "priorite": priority,
                 **({"id_sms_api": f"{prefix}{i}"} if prefix else {})} for i, n in enumerate(nums)]
    return orjson.dumps({"header": header(login), "messages": messages})


async def post_body(http: aiohttp.ClientSession, url: str, body: bytes) -> None:
    """Post a sendsms request; every one of its messages must be accepted."""
    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        answer = orjson.loads(await resp.read())  # the load's own cost kept small (as its encoding)
        if resp.status != 200 or not all(m["sent"] for m in answer):
            raise RuntimeError(f"sendsms refused: {resp.status} {str(answer)[:300]}")


async def post_bulk(http: aiohttp.ClientSession, url: str, login: str, nums: list[str], *, priority: int = 1,
                    prefix: str = "") -> None:
    await post_body(http, url, bulk_body(login, nums, priority=priority, prefix=prefix))


async def until(check: Callable[[], bool], every: float) -> None:
    """Poll ``check`` every ``every`` seconds until it is true (a benchmark
    watches another process's database: there is no event to wait on)."""
    while True:
        if check():
            return
        await asyncio.sleep(every)


def count_state(db_path: Path, account: str, state: str) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM jobs WHERE account = ? AND state = ?", (account, state)).fetchone()[0]
    finally:
        db.close()


async def wait_api(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError("daemon exited")
        try:
            async with http.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("daemon API did not come up")


ROUNDS = 3  # acceptance rounds, each after its own plain inserts


async def run_pipeline(folder: Path, *, accept_requests: int, e2e_messages: int, backlog: int,
                       probes: int, accept_only: bool = False) -> dict[str, Any]:
    api, agents = free_port(), free_port()
    config = write_config(folder, api, agents)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
    daemon = subprocess.Popen([sys.executable, *profile, "-m", "bridge.cli", "--log-level", "WARNING", "run",  # noqa: ASYNC220
                               "--config", str(config)], env=env)
    phones = None
    base = f"http://127.0.0.1:{api}"
    url = f"{base}/api/v1/sendsms"
    db_path = folder / "data" / "simbridge.db"
    results: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await wait_api(http, base, daemon)

            # 1. acceptance alone: two clients, 1,000 messages a request, in rounds, each after as
            # many plain inserts (the daemon idle meanwhile). The requests are written before the
            # clock starts, as the plain inserts' rows are: what is timed is the daemon (and this
            # client reading every answer), not the making of the load.
            per_client = accept_requests // 2
            accepted = per_client * 2 * BULK
            rounds: list[tuple[float, float, float]] = []  # plain inserts/s, accepted/s, daemon µs
            for i in range(ROUNDS):
                plain = sqlite_durable_inserts(folder, accepted, f"plain-{i}.db")
                first = i * per_client * 2
                requests = [bulk_body("bulk@example.com", numbers(BULK, (first + r) * BULK))
                            for r in range(per_client * 2)]
                cpu_start = cpu_seconds(daemon.pid)
                start = time.perf_counter()

                async def client(offset: int, requests: list[bytes] = requests) -> None:
                    for r in range(per_client):
                        await post_body(http, url, requests[offset + r])

                await asyncio.gather(client(0), client(per_client))
                rate = accepted / (time.perf_counter() - start)
                # The daemon's CPU per accepted message: load-independent, unlike the rate.
                cpu_us = (cpu_seconds(daemon.pid) - cpu_start) / accepted * 1e6
                rounds.append((plain, rate, cpu_us))
                print(f"round {i + 1}: plain sqlite {plain:8.0f}/s, accepted {rate:7.0f}/s ({per_client * 2} "
                      f"requests of {BULK}; daemon CPU {cpu_us:.1f} µs a message): {rate / plain * 100:.1f} %",
                      flush=True)
            results["sqlite_durable_inserts_per_s"] = statistics.median(r[0] for r in rounds)
            results["accepted_per_s"] = statistics.median(r[1] for r in rounds)
            results["daemon_cpu_us_per_accepted"] = statistics.median(r[2] for r in rounds)
            results["accepted_vs_sqlite_pct"] = statistics.median(r[1] / r[0] * 100 for r in rounds)
            results["accept_rounds"] = [[round(x, 1) for x in r] for r in rounds]
            print(f"sqlite_durable_inserts_per_s {results['sqlite_durable_inserts_per_s']:10.0f}   (median)",
                  flush=True)
            print(f"accepted_per_s        {results['accepted_per_s']:10.0f}   (median; daemon CPU "
                  f"{results['daemon_cpu_us_per_accepted']:.1f} µs a message)", flush=True)
            print(f"accepted_vs_sqlite_pct {results['accepted_vs_sqlite_pct']:9.1f}   (median of the rounds' ratios)",
                  flush=True)
            if accept_only:
                return results

            # 2. end to end with 20 phones online.
            pprof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE_PHONES"]] \
                if os.environ.get("BENCH_PROFILE_PHONES") else []
            args = [sys.executable, *pprof, "-m", "device_agents.virtual", "--url", f"ws://127.0.0.1:{agents}",
                    "--data-dir", str(folder / "phones"), "--latency", "0", "--jitter", "0",
                    "--delivery-delay", "0", "--window", str(WINDOW)]
            for i in range(PHONES):
                args += ["--device", f"phone-{i}", "--token", f"token-{i}"]
            (folder / "phones").mkdir()
            phones = subprocess.Popen(args, env=env)  # noqa: ASYNC220 - before the measured part
            for _ in range(400):
                async with http.get(f"{base}/api/v1/devices",
                                    headers={"Authorization": "Bearer key-e2e@example.com"}) as resp:
                    online = sum(d["state"] == "online" for d in (await resp.json())["data"])
                if online == PHONES:
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"only {online} phones came online")
            start = time.perf_counter()
            phones_cpu, daemon_cpu = cpu_seconds(phones.pid), cpu_seconds(daemon.pid)
            for r in range(e2e_messages // BULK):
                await post_bulk(http, url, "e2e@example.com", numbers(BULK, 10_000_000 + r * BULK))
            await until(lambda: count_state(db_path, "e2e@example.com", "delivered") >= e2e_messages, 0.05)
            results["e2e_per_s"] = e2e_messages / (time.perf_counter() - start)
            # CPU a message costs each process end to end (load-independent, unlike the rate).
            results["phones_cpu_us_per_job"] = (cpu_seconds(phones.pid) - phones_cpu) / e2e_messages * 1e6
            results["daemon_cpu_us_per_job"] = (cpu_seconds(daemon.pid) - daemon_cpu) / e2e_messages * 1e6
            print(f"e2e_per_s             {results['e2e_per_s']:10.0f}   ({e2e_messages} messages, "
                  f"{PHONES} phones; CPU a message: phones' process "
                  f"{results['phones_cpu_us_per_job']:.0f} µs, daemon {results['daemon_cpu_us_per_job']:.0f} µs)",
                  flush=True)

            # 3. priority-2 probes behind a priority-0 backlog.
            for r in range(backlog // BULK):
                await post_bulk(http, url, "e2e@example.com", numbers(BULK, 20_000_000 + r * BULK), priority=0)
            queued = count_state(db_path, "e2e@example.com", "queued")
            sent_at: dict[str, float] = {}
            answered: list[float] = []
            for i in range(probes):
                sent_at[f"probe-{i}"] = time.time()
                await post_bulk(http, url, "e2e@example.com", numbers(1, 30_000_000 + i), priority=2,
                                prefix=f"probe-{i}-")
                answered.append((time.time() - sent_at[f"probe-{i}"]) * 1000)
                await asyncio.sleep(0.02)
            results["p50_priority_accept_ms"] = statistics.median(answered)
            seen: dict[str, float] = {}
            deadline = time.monotonic() + 60
            while len(seen) < probes and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                for log in (folder / "phones").glob("*-radio.jsonl"):
                    for line in log.read_text().splitlines():
                        if '"probe-' in line:
                            rec = json.loads(line)
                            seen[rec["id_sms_api"].rsplit("-", 1)[0]] = rec["at"]
            latencies = sorted((seen[k] - sent_at[k]) * 1000 for k in seen)
            if len(latencies) < probes:
                raise RuntimeError(f"only {len(latencies)} of {probes} probes reached a phone")
            results["p99_priority_dispatch_ms"] = latencies[max(0, int(len(latencies) * 0.99) - 1)]
            results["p50_priority_dispatch_ms"] = statistics.median(latencies)
            results["backlog_queued_at_probe"] = queued
            # Where the time goes: in the queue (accepted → claimed) and on the way to the radio.
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            waits, trips = [], []
            for key, radio_at in seen.items():
                # Queued at its creation (a job's first line of history is its ``created``).
                created, dispatched = db.execute(
                    "SELECT j.created, h.at FROM job_history h JOIN jobs j ON j.id = h.job_id "
                    "WHERE j.account = 'e2e@example.com' AND j.id_sms_api = ? AND h.state = 'dispatched'",
                    (f"{key}-0",)).fetchone()
                waits.append((dispatched - created) * 1000)
                trips.append((radio_at - dispatched) * 1000)
            db.close()
            results["p50_queue_wait_ms"] = statistics.median(waits)
            results["p50_dispatch_to_radio_ms"] = statistics.median(trips)
            results["p99_priority_accept_ms"] = sorted(answered)[max(0, int(len(answered) * 0.99) - 1)]
            results["p99_queue_wait_ms"] = sorted(waits)[max(0, int(len(waits) * 0.99) - 1)]
            results["p99_dispatch_to_radio_ms"] = sorted(trips)[max(0, int(len(trips) * 0.99) - 1)]
            print(f"p99_priority_dispatch_ms {results['p99_priority_dispatch_ms']:7.1f}   (p50 "
                  f"{results['p50_priority_dispatch_ms']:.1f} ms, {probes} probes, {queued} priority-0 "
                  f"still queued)", flush=True)
    finally:
        for proc in (phones, daemon):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return results


async def main_async(quick: bool, *, accept_only: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="simbridge-bench-") as tmp:
        folder = Path(tmp)
        results: dict[str, Any] = {"load_start": [round(x, 2) for x in os.getloadavg()]}
        print(f"load {os.getloadavg()}", flush=True)
        results["ws_roundtrips_per_s"] = await ws_roundtrips(1.0 if quick else 3.0)
        print(f"ws_roundtrips_per_s   {results['ws_roundtrips_per_s']:10.0f}", flush=True)
        results.update(await run_pipeline(folder, accept_requests=4 if quick else 100,
                                          e2e_messages=2000 if quick else 10_000,
                                          backlog=5000 if quick else 100_000, probes=20 if quick else 200,
                                          accept_only=accept_only))
        results["cores"] = os.cpu_count()
        results["load_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"load {os.getloadavg()}", flush=True)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not the figures)")
    parser.add_argument("--accept-only", action="store_true", help="the limits and the acceptance figure only")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.quick, accept_only=args.accept_only))
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
