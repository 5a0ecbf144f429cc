"""Scale benchmark: ``python -m bench.scale [--quick] [--sizes 10000,100000,1000000]``.

Runs real daemons (``python -m bridge.cli run``, one process each) on a
SQLite file and on one PostgreSQL database (``SIMBRIDGE_BENCH_PG``, default
the local server; a throw-away database per setup, dropped after), and prints
its figures, the last line one JSON object:

- ``throughput``: for SQLite (1 daemon), PostgreSQL with 1 daemon and with 3
  daemons (6 instant virtual phones spread over them): ``accepted_per_s``
  (bulk sendsms, 1,000 a request, 2 clients per daemon, an account with no
  phone online) and ``e2e_per_s`` (from the first request to the last
  delivery report, the phones' account);
- ``growth``: per backend and store size (jobs, each with a line of history
  and a delivered webhook event, bulk-inserted straight into the tables):
  ``accept_per_s``, ``enqueue_during_scrape_ms`` (a 1-message sendsms sent
  while /metrics is being scraped: the median of 10, and ``…_max_ms`` the
  worst), ``metrics_ms`` (median
  of 20 scrapes), ``list_skip_ms`` (GET /api/v1/sms at skip = half the rows,
  capped at 50,000) and ``list_cursor_ms`` (the page after the cursor there),
  ``seed_s`` (the bulk load, with VACUUM ANALYZE and a checkpoint after it),
  ``startup_s`` (process start to /healthz), ``rss_mb`` (the daemon's, at the
  end).

``os.getloadavg()`` is printed at the start and the end: the figures mean
what the machine had left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg  # type: ignore[import-untyped]

from bridge.store.schema import SCHEMA_VERSION, job_counter

SERVER = os.environ.get("SIMBRIDGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IDLE, LIVE = "idle@example.com", "live@example.com"  # no phone online / the phones' account
KEY = "bench-access-key"
BULK = 1000
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+336{12000000 + start + i:08d}" for i in range(count)]


# -- stores ---------------------------------------------------------------------------


class Postgres:
    """A throw-away database on the server."""

    def __init__(self) -> None:
        self.name = f"simbridge_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.url = urlunsplit(urlsplit(SERVER)._replace(path=f"/{self.name}"))

    async def __aenter__(self) -> Postgres:
        conn = await asyncpg.connect(SERVER)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self

    async def __aexit__(self, *_: object) -> None:
        conn = await asyncpg.connect(SERVER)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


def seed_rows(count: int, now: float) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """``count`` settled jobs of the IDLE account (90 % delivered, 10 % failed), and their counters."""
    rows, counters = [], {job_counter("delivered", 1): 0, job_counter("failed", 1): 0}
    for i in range(count):
        state = "failed" if i % 10 == 0 else "delivered"
        counters[job_counter(state, 1)] += 1
        created = now - 86400 + i * (80000 / max(count, 1))
        rows.append((IDLE, f"seed{i:012d}", "sms", f"+336{12000000 + i % 1000000:08d}", "seeded message", 1,
                     created, created + 86400, state, "dev-seed", 1, created, created + 5))
    return rows, counters


JOB_SEED_COLUMNS = ("account", "id_sms_api", "kind", "phone_number", "message", "priority", "due", "expires",
                    "state", "device_id", "attempts", "created", "updated")


def seed_sqlite(path: Path, count: int) -> float:
    """Bulk insert straight into the tables (the daemon has migrated them); seconds."""
    t0 = time.perf_counter()
    rows, counters = seed_rows(count, time.time())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO jobs ({', '.join(JOB_SEED_COLUMNS)}) VALUES ({', '.join('?' * 13)})", rows)
    db.execute("INSERT INTO job_history (job_id, state, at, device_id) SELECT id, state, updated, device_id "
               "FROM jobs WHERE account = ?", (IDLE,))
    db.execute("INSERT INTO outbox (account, kind, order_key, payload, created, next_attempt, attempts, "
               "delivered_at) SELECT account, 'sms_delivered', id_sms_api, '{}', updated, updated, 1, updated + 1 "
               "FROM jobs WHERE account = ?", (IDLE,))
    db.executemany("INSERT INTO counters (name, n) VALUES (?, ?)", [*counters.items(), ("outbox:delivered", count)])
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t0


async def seed_postgres(url: str, count: int) -> float:
    t0 = time.perf_counter()
    rows, counters = seed_rows(count, time.time())
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("jobs", records=rows, columns=JOB_SEED_COLUMNS)
            await conn.execute("INSERT INTO job_history (job_id, state, at, device_id) SELECT id, state, updated, "
                               "device_id FROM jobs WHERE account = $1", IDLE)
            await conn.execute("INSERT INTO outbox (account, kind, order_key, payload, created, next_attempt, "
                               "attempts, delivered_at) SELECT account, 'sms_delivered', id_sms_api, '{}', updated, "
                               "updated, 1, updated + 1 FROM jobs WHERE account = $1", IDLE)
            await conn.executemany("INSERT INTO counters (name, n) VALUES ($1, $2)",
                                   [*counters.items(), ("outbox:delivered", count)])
        # Settle the load before measuring: the visibility map set (index-only scans), statistics
        # taken, dirty pages written, so that autovacuum and a checkpoint do not run during the figures.
        await conn.execute("VACUUM (ANALYZE) jobs, job_history, outbox, counters")
        with contextlib.suppress(asyncpg.PostgresError):  # needs pg_checkpoint (or a superuser)
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def migrate_postgres(url: str) -> None:
    from bridge.store.postgres import PostgresStore

    class Nothing:
        def wants(self, account: str, kind: str) -> bool:
            return False
    store = PostgresStore(url, event_filter=Nothing(), pool_size=1)
    await store.open()
    await store.close()


def migrate_sqlite(path: Path) -> None:
    from bridge.store.schema import MIGRATIONS
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for sql in MIGRATIONS:
        db.executescript(sql)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.close()


# -- daemons --------------------------------------------------------------------------


class Daemon:
    def __init__(self, folder: Path, *, node: str, url: str | None, phones: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        devices = "".join(f'[[devices]]\nid = "{p}"\nkind = "virtual"\naccount = "{LIVE}"\nlatency = 0.0\n'
                          f"jitter = 0.0\ndelivery_delay = 0.0\nmax_per_minute = 0\n\n" for p in phones)
        store = f'url = "{url}"\n' if url else ""
        self.config = folder / f"{node}.toml"
        self.config.write_text(
            f'[api]\nlisten = "127.0.0.1:{self.port}"\npublic_url = "{self.base}"\nmax_messages = 1000\n\n'
            f'[agents]\nlisten = "127.0.0.1:{free_port()}"\n\n'
            f'[store]\npath = "{folder / "simbridge.db"}"\n{store}node = "{node}"\n\n'
            f'[[accounts]]\nlogin = "{IDLE}"\naccess_key = "{KEY}"\n\n'
            f'[[accounts]]\nlogin = "{LIVE}"\naccess_key = "{KEY}"\n\n' + devices)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    async def start(self, http: aiohttp.ClientSession) -> None:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--log-level", "WARNING",  # noqa: ASYNC220
                                      "run", "--config", str(self.config)], cwd=ROOT)  # (returns at once)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}")
            try:
                async with http.get(self.base + "/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        self.startup_s = time.perf_counter() - t0

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def post(http: aiohttp.ClientSession, base: str, login: str, nums: list[str], tag: str) -> None:
    body = {"header": {"login": login, "accessKey": KEY},
            "messages": [{"phone_number": n, "message": f"{tag} {n}"} for n in nums]}
    async with http.post(base + "/api/v1/sendsms", json=body) as resp:
        if resp.status != 200:
            raise SystemExit(f"sendsms: HTTP {resp.status}: {(await resp.text())[:200]}")
        await resp.read()


async def accept_rate(http: aiohttp.ClientSession, daemons: list[Daemon], requests: int, start: int) -> float:
    """Messages accepted per second: ``requests`` bulk requests, 2 clients per daemon."""
    todo = list(range(requests))

    async def client(d: Daemon) -> None:
        while todo:
            i = todo.pop()
            await post(http, d.base, IDLE, numbers(BULK, start + i * BULK), "accept")
    t0 = time.perf_counter()
    await asyncio.gather(*(client(d) for d in daemons for _ in range(2)))
    return requests * BULK / (time.perf_counter() - t0)


async def delivered(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    total = 0
    for line in text.splitlines():
        if line.startswith("simbridge_jobs{") and 'state="delivered"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def e2e_rate(http: aiohttp.ClientSession, daemons: list[Daemon], count: int) -> float:
    per = count // len(daemons)
    before = await delivered(http, daemons[0].base)
    t0 = time.perf_counter()
    await asyncio.gather(*(post(http, d.base, LIVE, numbers(min(BULK, per - j), 5_000_000 + i * per + j), "e2e")
                           for i, d in enumerate(daemons) for j in range(0, per, BULK)))
    while await delivered(http, daemons[0].base) - before < per * len(daemons):
        if time.perf_counter() - t0 > 300:
            raise SystemExit("end to end: not all delivered within 300 s")
        await asyncio.sleep(0.05)
    return per * len(daemons) / (time.perf_counter() - t0)


# -- the two parts ----------------------------------------------------------------------


async def throughput(folder: Path, *, backend: str, daemons: int, accept_requests: int, e2e: int) -> dict[str, Any]:
    phones = [[f"{backend}{daemons}-n{n}-p{p}" for p in range(6 // daemons)] for n in range(daemons)]
    async with aiohttp.ClientSession() as http:
        if backend == "sqlite":
            boxes = [Daemon(folder / "sqlite", node="n0", url=None, phones=phones[0])]
            return await _measure(http, boxes, accept_requests, e2e)
        async with Postgres() as pg:
            boxes = [Daemon(folder / f"pg{daemons}-n{n}", node=f"n{n}", url=pg.url, phones=phones[n])
                     for n in range(daemons)]
            return await _measure(http, boxes, accept_requests, e2e)


async def _measure(http: aiohttp.ClientSession, boxes: list[Daemon], accept_requests: int, e2e: int) -> dict[str, Any]:
    try:
        for d in boxes:
            await d.start(http)
        accepted = await accept_rate(http, boxes, accept_requests, 0)
        return {"daemons": len(boxes), "accepted_per_s": round(accepted), "e2e_per_s": round(await e2e_rate(
            http, boxes, e2e))}
    finally:
        for d in boxes:
            d.stop()


async def growth_point(folder: Path, backend: str, size: int, accept_requests: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        if backend == "sqlite":
            path = folder / f"sqlite-{size}" / "simbridge.db"
            path.parent.mkdir(parents=True)
            migrate_sqlite(path)
            seeded = seed_sqlite(path, size)
            return await _grow(http, Daemon(path.parent, node="n0", url=None, phones=[]), size, seeded,
                               accept_requests)
        async with Postgres() as pg:
            await migrate_postgres(pg.url)
            seeded = await seed_postgres(pg.url, size)
            return await _grow(http, Daemon(folder / f"pg-{size}", node="n0", url=pg.url, phones=[]), size, seeded,
                               accept_requests)


async def _timed(coro: Any) -> float:
    t0 = time.perf_counter()
    await coro
    return (time.perf_counter() - t0) * 1000


async def _get(http: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    async with http.get(url, params=params, headers={"Authorization": f"Bearer {KEY}"}) as resp:
        if resp.status != 200:
            raise SystemExit(f"GET {url}: HTTP {resp.status}")
        return await resp.json(content_type=None) if "json" in resp.content_type else {"text": await resp.text()}


async def _grow(http: aiohttp.ClientSession, d: Daemon, size: int, seeded: float,
                accept_requests: int) -> dict[str, Any]:
    try:
        await d.start(http)
        scrapes = [await _timed(_get(http, d.base + "/metrics")) for _ in range(20)]
        during = []
        for i in range(10):
            scrape = asyncio.create_task(_get(http, d.base + "/metrics"))
            await asyncio.sleep(0)
            during.append(await _timed(post(http, d.base, IDLE, numbers(1, 9_000_000 + i), "one")))
            await scrape
        deep = str(min(size // 2, 50_000))
        skip_ms = await _timed(_get(http, d.base + "/api/v1/sms", take="50", skip=deep))
        page = await _get(http, d.base + "/api/v1/sms", take="50", skip=deep)
        cursor_ms = await _timed(_get(http, d.base + "/api/v1/sms", take="50", cursor=page["next_cursor"]))
        accept = await accept_rate(http, [d], accept_requests, 1_000_000)
        return {"rows": size, "seed_s": round(seeded, 1), "accept_per_s": round(accept),
                "enqueue_during_scrape_ms": round(statistics.median(during), 1),
                "enqueue_during_scrape_max_ms": round(max(during), 1),
                "metrics_ms": round(statistics.median(scrapes), 1),
                "list_skip_ms": round(skip_ms, 1), "list_cursor_ms": round(cursor_ms, 1),
                "startup_s": round(d.startup_s, 2), "rss_mb": round(d.rss_mb(), 1)}
    finally:
        d.stop()


async def main_async(sizes: list[int], accept_requests: int, e2e: int) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    print(f"load average before: {out['load_before']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="simbridge-scale-") as tmp:
        folder = Path(tmp)
        out["throughput"] = {}
        for backend, daemons in (("sqlite", 1), ("postgresql", 1), ("postgresql", 3)):
            name = f"{backend}-{daemons}"
            out["throughput"][name] = await throughput(folder, backend=backend, daemons=daemons,
                                                       accept_requests=accept_requests, e2e=e2e)
            print(name, out["throughput"][name], flush=True)
        out["growth"] = {}
        for backend in ("sqlite", "postgresql"):
            out["growth"][backend] = []
            for size in sizes:
                point = await growth_point(folder, backend, size, accept_requests)
                out["growth"][backend].append(point)
                print(backend, point, flush=True)
    out["load_after"] = os.getloadavg()
    print(f"load average after: {out['load_after']}", flush=True)
    for points in out["growth"].values():
        base = points[0]["accept_per_s"]
        for p in points:
            p["accept_vs_first"] = round(p["accept_per_s"] / base, 2)
    print_tables(out)
    return out


def print_tables(out: dict[str, Any]) -> None:
    print("\nthroughput (messages/s)")
    print(f"{'setup':<14}{'accepted/s':>12}{'end-to-end/s':>14}")
    for name, t in out["throughput"].items():
        print(f"{name:<14}{t['accepted_per_s']:>12}{t['e2e_per_s']:>14}")
    print("\ngrowth")
    cols = ("rows", "accept_per_s", "accept_vs_first", "enqueue_during_scrape_ms", "enqueue_during_scrape_max_ms",
            "metrics_ms", "list_skip_ms", "list_cursor_ms", "startup_s", "rss_mb", "seed_s")
    print(f"{'backend':<12}" + "  ".join(c for c in cols))
    for backend, points in out["growth"].items():
        for p in points:
            print(f"{backend:<12}" + "  ".join(f"{p[c]!s:>{len(c)}}" for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="store sizes of the growth table")
    args = parser.parse_args()
    sizes = [10_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    requests, e2e = (5, 600) if args.quick else (20, 3000)
    out = asyncio.run(main_async(sizes, requests, e2e))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
