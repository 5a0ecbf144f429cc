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


# -- CPU time (load-independent, where wall-clock figures are not) ---------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


class CpuMeter:
    """CPU time of the daemon's process and, on PostgreSQL, of the server processes serving its
    database (``pg_stat_activity``: its pool's backends; a backend that ends between two readings is
    not counted)."""

    def __init__(self, d: Daemon, db: str | None) -> None:
        self.d, self.db = d, db

    async def read(self) -> dict[int, float]:
        assert self.d.proc is not None
        out = {self.d.proc.pid: cpu_s(self.d.proc.pid)}
        if self.db is not None:
            conn = await asyncpg.connect(SERVER)
            try:
                pids = [r[0] for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1",
                                                       self.db)]
            finally:
                await conn.close()
            out.update((pid, cpu_s(pid)) for pid in pids)
        return out

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(t - before.get(pid, 0.0) for pid, t in after.items())


# -- growth: one daemon per store size, measured in turn, round after round ------------


class Point:
    """One store size: its store, its daemon, and what it measured round after round."""

    def __init__(self, backend: str, size: int, folder: Path) -> None:
        self.backend, self.size = backend, size
        self.pg = Postgres() if backend == "postgresql" else None
        self.folder = folder / f"{backend}-{size}"
        self.daemon: Daemon | None = None
        self.meter: CpuMeter | None = None
        self.seed_s = 0.0
        self.runs: dict[str, list[float]] = {k: [] for k in (
            "accept_per_s", "accept_cpu_us", "during", "metrics", "metrics_cpu_us", "list_skip", "list_cursor")}

    async def open(self, http: aiohttp.ClientSession) -> None:
        if self.pg is None:
            path = self.folder / "simbridge.db"
            self.folder.mkdir(parents=True)
            migrate_sqlite(path)
            self.seed_s = seed_sqlite(path, self.size)
            self.daemon = Daemon(self.folder, node="n0", url=None, phones=[])
        else:
            await self.pg.__aenter__()
            await migrate_postgres(self.pg.url)
            self.seed_s = await seed_postgres(self.pg.url, self.size)
            self.daemon = Daemon(self.folder, node="n0", url=self.pg.url, phones=[])
        await self.daemon.start(http)
        self.meter = CpuMeter(self.daemon, self.pg.name if self.pg else None)

    async def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        if self.pg is not None:
            await self.pg.__aexit__()

    async def reset(self) -> None:
        """Back to the seeded rows, settled as after the seed: the jobs a round accepted deleted (their
        history and counters with them), then VACUUM and a checkpoint on PostgreSQL (so that every round
        starts with the same pages to write: the first change of a page after a checkpoint writes the
        whole page to the WAL), ``wal_checkpoint`` on SQLite."""
        deleted = ("SELECT state, priority, COUNT(*) FROM jobs WHERE account = {p} AND id_sms_api NOT LIKE 'seed%' "
                   "GROUP BY state, priority")
        history = ("DELETE FROM job_history WHERE job_id IN (SELECT id FROM jobs WHERE account = {p} "
                   "AND id_sms_api NOT LIKE 'seed%')")
        jobs = "DELETE FROM jobs WHERE account = {p} AND id_sms_api NOT LIKE 'seed%'"
        if self.pg is None:
            db = sqlite3.connect(self.folder / "simbridge.db", isolation_level=None, timeout=30)
            try:
                db.execute("BEGIN IMMEDIATE")
                rows = db.execute(deleted.format(p="?"), (IDLE,)).fetchall()
                db.execute(history.format(p="?"), (IDLE,))
                db.execute(jobs.format(p="?"), (IDLE,))
                db.executemany("INSERT INTO counters (name, n) VALUES (?, ?)",
                               [(job_counter(state, pr), -n) for state, pr, n in rows])
                db.execute("COMMIT")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
            return
        conn = await asyncpg.connect(self.pg.url)
        try:
            async with conn.transaction():
                rows = await conn.fetch(deleted.format(p="$1"), IDLE)
                await conn.execute(history.format(p="$1"), IDLE)
                await conn.execute(jobs.format(p="$1"), IDLE)
                await conn.executemany("INSERT INTO counters (name, n) VALUES ($1, $2)",
                                       [(job_counter(r[0], r[1]), -r[2]) for r in rows])
            await conn.execute("VACUUM (ANALYZE) jobs, job_history, counters")
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    async def round(self, http: aiohttp.ClientSession, accept_requests: int, n: int) -> None:
        d, meter = self.daemon, self.meter
        assert d is not None and meter is not None
        await self.reset()
        await _get(http, d.base + "/metrics")  # the pool's connections open, statements prepared
        c0 = await meter.read()
        scrapes = [await _timed(_get(http, d.base + "/metrics")) for _ in range(20)]
        self.runs["metrics_cpu_us"].append(meter.spent(c0, await meter.read()) / 20 * 1e6)
        self.runs["metrics"] += scrapes
        for i in range(10):
            scrape = asyncio.create_task(_get(http, d.base + "/metrics"))
            await asyncio.sleep(0)
            self.runs["during"].append(await _timed(post(http, d.base, IDLE, numbers(1, 9_000_000 + n * 10 + i),
                                                         "one")))
            await scrape
        deep = str(min(self.size // 2, 50_000))
        self.runs["list_skip"].append(await _timed(_get(http, d.base + "/api/v1/sms", take="50", skip=deep)))
        page = await _get(http, d.base + "/api/v1/sms", take="50", skip=deep)
        self.runs["list_cursor"].append(await _timed(_get(http, d.base + "/api/v1/sms", take="50",
                                                          cursor=page["next_cursor"])))
        c0 = await meter.read()
        self.runs["accept_per_s"].append(await accept_rate(http, [d], accept_requests, 1_000_000))
        self.runs["accept_cpu_us"].append(meter.spent(c0, await meter.read()) / (accept_requests * BULK) * 1e6)

    def figures(self) -> dict[str, Any]:
        r = self.runs
        assert self.daemon is not None
        return {"rows": self.size, "rounds": len(r["accept_per_s"]), "seed_s": round(self.seed_s, 1),
                "accept_per_s": round(statistics.median(r["accept_per_s"])),
                "accept_per_s_min": round(min(r["accept_per_s"])), "accept_per_s_max": round(max(r["accept_per_s"])),
                "accept_cpu_us_per_msg": round(statistics.median(r["accept_cpu_us"]), 1),
                "enqueue_during_scrape_ms": round(statistics.median(r["during"]), 1),
                "enqueue_during_scrape_max_ms": round(max(r["during"]), 1),
                "metrics_ms": round(statistics.median(r["metrics"]), 1),
                "metrics_max_ms": round(max(r["metrics"]), 1),
                "metrics_cpu_us": round(statistics.median(r["metrics_cpu_us"])),
                "list_skip_ms": round(statistics.median(r["list_skip"]), 1),
                "list_cursor_ms": round(statistics.median(r["list_cursor"]), 1),
                "startup_s": round(self.daemon.startup_s, 2), "rss_mb": round(self.daemon.rss_mb(), 1)}


async def growth(folder: Path, backend: str, sizes: list[int], rounds: int,
                 accept_requests: int) -> list[dict[str, Any]]:
    """Every size's daemon up at once; each round measures every size in turn (the order turned by one
    each round), so that a size is never measured only while the machine was busier. Acceptance is
    compared within a round (``accept_vs_first``: the median over rounds of this size's rate over the
    first size's in the same round)."""
    points = [Point(backend, size, folder) for size in sizes]
    async with aiohttp.ClientSession() as http:
        try:
            for p in points:
                await p.open(http)
            ratios: list[list[float]] = [[] for _ in points]
            for n in range(rounds):
                order = points[n % len(points):] + points[:n % len(points)]
                for p in order:
                    await p.round(http, accept_requests, n)
                print(f"  {backend} round {n + 1}/{rounds}: accept/s "
                      + ", ".join(f"{p.size}: {p.runs['accept_per_s'][-1]:.0f}" for p in points)
                      + f"; load {os.getloadavg()[0]:.1f}", flush=True)
                for i, p in enumerate(points):
                    ratios[i].append(p.runs["accept_per_s"][-1] / points[0].runs["accept_per_s"][-1])
            out = []
            for p, rs in zip(points, ratios, strict=True):
                figures = p.figures()
                figures["accept_vs_first"] = round(statistics.median(rs), 2)
                figures["accept_vs_first_min"], figures["accept_vs_first_max"] = round(min(rs), 2), round(max(rs), 2)
                figures["accept_cpu_vs_first"] = round(
                    figures["accept_cpu_us_per_msg"] / statistics.median(points[0].runs["accept_cpu_us"]), 2)
                out.append(figures)
            return out
        finally:
            for p in points:
                await p.close()


async def _timed(coro: Any) -> float:
    t0 = time.perf_counter()
    await coro
    return (time.perf_counter() - t0) * 1000


async def _get(http: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    async with http.get(url, params=params, headers={"Authorization": f"Bearer {KEY}"}) as resp:
        if resp.status != 200:
            raise SystemExit(f"GET {url}: HTTP {resp.status}")
        return await resp.json(content_type=None) if "json" in resp.content_type else {"text": await resp.text()}


async def main_async(sizes: list[int], accept_requests: int, e2e: int, rounds: int,
                     parts: set[str], backends: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "rounds": rounds}
    print(f"load average before: {out['load_before']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="simbridge-scale-") as tmp:
        folder = Path(tmp)
        out["throughput"] = {}
        if "throughput" in parts:
            for backend, daemons in (("sqlite", 1), ("postgresql", 1), ("postgresql", 3)):
                if backend not in backends:
                    continue
                name = f"{backend}-{daemons}"
                runs = [await throughput(folder / f"{name}-{n}", backend=backend, daemons=daemons,
                                         accept_requests=accept_requests, e2e=e2e) for n in range(rounds)]
                out["throughput"][name] = {
                    "daemons": daemons, "runs": len(runs),
                    **{f"{k}{suffix}": round(f(r[k] for r in runs)) for k in ("accepted_per_s", "e2e_per_s")
                       for suffix, f in (("", statistics.median), ("_min", min), ("_max", max))}}
                print(name, out["throughput"][name], f"load {os.getloadavg()[0]:.1f}", flush=True)
        out["growth"] = {}
        if "growth" in parts:
            for backend in backends:
                out["growth"][backend] = await growth(folder, backend, sizes, rounds, accept_requests)
                for p in out["growth"][backend]:
                    print(backend, p, flush=True)
    out["load_after"] = os.getloadavg()
    print(f"load average after: {out['load_after']}", flush=True)
    print_tables(out)
    return out


def print_tables(out: dict[str, Any]) -> None:
    print(f"\nthroughput (messages/s; median of {out['rounds']} runs, [min – max])")
    print(f"{'setup':<14}{'accepted/s':>26}{'end-to-end/s':>24}")
    for name, t in out["throughput"].items():
        print(f"{name:<14}{t['accepted_per_s']:>8} [{t['accepted_per_s_min']} – {t['accepted_per_s_max']}]"
              f"{t['e2e_per_s']:>12} [{t['e2e_per_s_min']} – {t['e2e_per_s_max']}]")
    print(f"\ngrowth (medians of {out['rounds']} rounds; [min – max])")
    for backend, points in out["growth"].items():
        for p in points:
            print(f"{backend:<11}{p['rows']:>8} rows  accept/s {p['accept_per_s']} [{p['accept_per_s_min']} – "
                  f"{p['accept_per_s_max']}]  vs first {p['accept_vs_first']} [{p['accept_vs_first_min']} – "
                  f"{p['accept_vs_first_max']}]  CPU/msg {p['accept_cpu_us_per_msg']} us "
                  f"(vs first {p['accept_cpu_vs_first']})  enqueue during scrape {p['enqueue_during_scrape_ms']} / "
                  f"{p['enqueue_during_scrape_max_ms']} ms  /metrics {p['metrics_ms']} / {p['metrics_max_ms']} ms "
                  f"({p['metrics_cpu_us']} us CPU)  list skip {p['list_skip_ms']} ms, cursor {p['list_cursor_ms']} ms"
                  f"  start-up {p['startup_s']} s  RSS {p['rss_mb']} MB  seed {p['seed_s']} s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="store sizes of the growth table")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions (figures are their medians)")
    parser.add_argument("--only", choices=("throughput", "growth"), help="one part only")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    args = parser.parse_args()
    sizes = [10_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    requests, e2e = (5, 600) if args.quick else (10, 3000)
    rounds = 2 if args.quick else args.rounds
    parts = {args.only} if args.only else {"throughput", "growth"}
    out = asyncio.run(main_async(sizes, requests, e2e, rounds, parts, args.backends.split(",")))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
