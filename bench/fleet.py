"""Fleet benchmark: ``python -m bench.fleet [--messages N] [--probes N]``.

The real daemon in a process of its own, 20 virtual phones as standalone
agents in a second process, and a campaign sent through bulk sendsms: does
the fleet send at the rate its SIMs are allowed, never more, and how long does
a priority-2 message (a one-time code) wait behind the campaign?

The phones are as unkind as real ones, with time scaled by ``SCALE`` so that
the campaign takes minutes, not an hour (every figure below is the real one
times ``SCALE``, latencies divided by it):

- one part at a time on the radio (Android's SMSDispatcher waits for each
  part's RIL answer), ~1.2 s a part on a real network: 0.3 s ± 0.1 here;
- Android's own cap, 30 parts a minute per app (SmsUsageMonitor), refused
  beyond: 120 here;
- the bridge's caps per device (the configuration under test): 25 parts a
  minute (``ANDROID_DEFAULT_RATE``, under Android's 30), i.e. 100 here, and on
  four devices an hourly cap that binds during the campaign (as a carrier's
  30–200 an hour would), 60 parts → 240 here.

Messages are 1 part (80 %), 2 parts (15 %) or 3 parts (5 %). Figures, from the
phones' radio logs (when each phone was asked to send, what Android counts):

- ``cap_violations``: sends that broke a device's minute or hour cap (target 0);
- ``cap_headroom_min_ms``: how close any send came to breaking one: the
  smallest time by which the send that had to leave a window for the next one
  to fit had left it (negative: a violation);
- ``rate_used_pct``: parts sent over whole minutes from the first dispatch
  while work was queued, against what the caps allowed in them (target ≥ 99);
- ``probe_excess_p99_ms``: for priority-2 messages sent mid-campaign, the
  time to reach a phone minus the time to the next free slot on any device
  (computed from the radio logs), p99 (target ≤ 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.pipeline import BULK, free_port, header, wait_api

PHONES = 20
SCALE = 4
PER_MINUTE = 25 * SCALE  # parts, the bridge's cap on every device
PER_HOUR = 60 * SCALE  # parts, on the first HOURLY devices
HOURLY = 4
ANDROID_CAP = 30 * SCALE  # the phone's own cap, parts a minute
LATENCY, JITTER = 1.0 / SCALE, 0.8 / SCALE  # a part: 0.25-0.45 s (real: 1-1.8 s)
ACCOUNT = "fleet@example.com"
PROBE_ACCOUNT = ACCOUNT


def caps(device: int) -> dict[float, int]:
    """span (s) -> cap in parts, as configured for ``phone-<device>``."""
    out = {60.0: PER_MINUTE}
    if device < HOURLY:
        out[3600.0] = PER_HOUR
    return out


def write_config(folder: Path, api: int, agents: int) -> Path:
    lines = [f'[api]\nlisten = "127.0.0.1:{api}"\n', f'[agents]\nlisten = "127.0.0.1:{agents}"\n',
             f'[store]\npath = "{folder / "data" / "simbridge.db"}"\n',
             f'[[accounts]]\nlogin = "{ACCOUNT}"\naccess_key = "key-{ACCOUNT}"\n']
    for i in range(PHONES):
        hourly = f"max_per_hour = {PER_HOUR}\n" if i < HOURLY else ""
        lines.append(f'[[devices]]\nid = "phone-{i}"\nkind = "virtual"\naccount = "{ACCOUNT}"\n'
                     f'standalone = true\ntoken = "token-{i}"\nmax_per_minute = {PER_MINUTE}\n{hourly}')
    path = folder / "config.toml"
    path.write_text("\n".join(lines))
    return path


def campaign(count: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        roll = rng.random()
        length = 100 if roll < 0.80 else (250 if roll < 0.95 else 400)  # 1, 2 or 3 GSM-7 parts
        text = (f"Campaign {i}: " + "lorem ipsum dolor sit amet " * 20)[:length]
        out.append({"phone_number": f"+3361{i:07d}", "message": text, "priorite": 0, "id_sms_api": f"c{i}"})
    return out


def radio_logs(folder: Path) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for i in range(PHONES):
        path = folder / "phones" / f"virtual-phone-{i}-radio.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        out[i] = sorted(rows, key=lambda r: r["asked"])
    return out


def violations(sends: list[dict[str, Any]], limits: dict[float, int]) -> int:
    """Sends after which some window of ``span`` seconds held more than its cap."""
    bad = 0
    for span, cap in limits.items():
        window: collections.deque[tuple[float, int]] = collections.deque()
        total = 0
        for s in sends:
            while window and window[0][0] <= s["asked"] - span:
                total -= window.popleft()[1]
            window.append((s["asked"], s["parts"]))
            total += s["parts"]
            if total > cap:
                bad += 1
    return bad


def headroom(sends: list[dict[str, Any]], limits: dict[float, int]) -> float | None:
    """How close the sends came to breaking a cap, in seconds: for each send,
    the latest earlier send that had to be out of the window for it to fit
    left it this long before (negative: a violation); the smallest."""
    least: float | None = None
    for span, cap in limits.items():
        total = 0
        first = 0  # up to this send, the sends from ``first`` hold more than ``cap`` parts, from the next not
        for s in sends:
            total += s["parts"]
            if total <= cap:
                continue
            while total - sends[first]["parts"] > cap:
                total -= sends[first]["parts"]
                first += 1
            gap = s["asked"] - sends[first]["asked"] - span
            least = gap if least is None else min(least, gap)
    return least


def next_free(sends: list[dict[str, Any]], limits: dict[float, int], at: float) -> float:
    """The first time >= ``at`` when one more part fits under every cap, from
    the sends made before ``at``."""
    before = [s for s in sends if s["asked"] < at]
    when = at
    for span, cap in limits.items():
        inside = [s for s in before if s["asked"] > at - span]
        over = sum(s["parts"] for s in inside) + 1 - cap
        for s in inside:
            if over <= 0:
                break
            over -= s["parts"]
            when = max(when, s["asked"] + span)
    return when


async def run(folder: Path, messages: int, probes: int) -> dict[str, Any]:
    api, agents = free_port(), free_port()
    config = write_config(folder, api, agents)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    daemon = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--log-level", "WARNING", "run",  # noqa: ASYNC220
                               "--config", str(config)], env=env)
    phones = None
    base = f"http://127.0.0.1:{api}"
    url = f"{base}/api/v1/sendsms"
    results: dict[str, Any] = {}
    rng = random.Random(15)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await wait_api(http, base, daemon)
            (folder / "phones").mkdir()
            args = [sys.executable, "-m", "device_agents.virtual", "--url", f"ws://127.0.0.1:{agents}",
                    "--data-dir", str(folder / "phones"), "--latency", str(LATENCY), "--jitter", str(JITTER),
                    "--delivery-delay", "0.5", "--serial", "--cap-per-minute", str(ANDROID_CAP)]
            for i in range(PHONES):
                args += ["--device", f"phone-{i}", "--token", f"token-{i}"]
            phones = subprocess.Popen(args, env=env)  # noqa: ASYNC220
            online = 0
            for _ in range(600):
                async with http.get(f"{base}/api/v1/devices",
                                    headers={"Authorization": f"Bearer key-{ACCOUNT}"}) as resp:
                    online = sum(d["state"] == "online" for d in (await resp.json())["data"])
                if online == PHONES:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"only {online} phones came online")
            batch = campaign(messages, rng)
            total_parts = sum(1 + (len(m["message"]) - 1) // 153 if len(m["message"]) > 160 else 1 for m in batch)
            started = time.time()
            for i in range(0, len(batch), BULK):
                async with http.post(url, json={"header": header(ACCOUNT), "messages": batch[i:i + BULK]}) as resp:
                    body = await resp.json()
                    if resp.status != 200 or not all(m["sent"] for m in body):
                        raise RuntimeError(f"campaign refused: {resp.status} {str(body)[:300]}")
            print(f"campaign of {messages} messages ({total_parts} parts) accepted in "
                  f"{time.time() - started:.1f} s", flush=True)
            expected_s = total_parts / (PHONES * PER_MINUTE) * 60
            # Priority-2 probes mid-campaign, one at a time, at random moments.
            sent_at: dict[str, float] = {}
            for p in range(probes):
                await asyncio.sleep(rng.uniform(0.2, 0.6) * expected_s / max(1, probes))
                key = f"probe-{p}"
                sent_at[key] = time.time()
                async with http.post(url, json={"header": header(ACCOUNT), "messages": [
                        {"phone_number": f"+3362{p:07d}", "message": f"Your code is {p:06d}", "priorite": 2,
                         "id_sms_api": key}]}) as resp:
                    body = await resp.json()
                    if resp.status != 200 or not body[0]["sent"]:
                        raise RuntimeError(f"probe refused: {resp.status} {str(body)[:300]}")
            db = folder / "data" / "simbridge.db"
            deadline = time.monotonic() + expected_s * 3 + 120
            while True:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                left = conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'dispatched')").fetchone()[0]
                last_queued = conn.execute(
                    "SELECT MAX(h.at) FROM job_history h WHERE h.state = 'dispatched'").fetchone()[0]
                conn.close()
                if left == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} jobs still queued or dispatched")
                await asyncio.sleep(1.0)
            results["campaign_s"] = time.time() - started
            print(f"campaign done in {results['campaign_s']:.1f} s (the caps allow it in about "
                  f"{expected_s:.0f} s)  load {os.getloadavg()}", flush=True)
    finally:
        for proc in (phones, daemon):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    logs = radio_logs(folder)
    every = [s for rows in logs.values() for s in rows]
    results["sent"] = len(every)
    results["refused_by_phones"] = messages + probes - len(every)
    results["cap_violations"] = sum(violations(logs[i], caps(i)) for i in range(PHONES))
    rooms = [h for i in range(PHONES) if (h := headroom(logs[i], caps(i))) is not None]
    if rooms:
        results["cap_headroom_min_ms"] = min(rooms) * 1000
    # Rate used: whole minutes from the first send while work was queued (until the last dispatch).
    first = min(s["asked"] for s in every)
    minutes = int((last_queued - first) // 60)
    if minutes >= 1:
        end = first + minutes * 60
        sent_parts = sum(s["parts"] for s in every if first <= s["asked"] < end)
        # Sliding windows: in T seconds a cap of C per span allows C × ceil(T / span) parts.
        allowed = sum(min(cap * math.ceil(minutes * 60 / span) for span, cap in caps(i).items())
                      for i in range(PHONES))
        results["rate_used_pct"] = sent_parts / allowed * 100
        results["rate_minutes"] = minutes
    probe_rows = {s["id_sms_api"]: s for s in every if str(s.get("id_sms_api", "")).startswith("probe-")}
    # Where a probe's time went: accepted (the job's row written), claimed (its claim written), asked.
    conn = sqlite3.connect(f"file:{folder / 'data' / 'simbridge.db'}?mode=ro", uri=True)
    stamps = {key: (created, claimed) for key, created, claimed in conn.execute(
        "SELECT id_sms_api, created, dispatched_at FROM jobs WHERE id_sms_api LIKE 'probe-%'")}
    conn.close()
    excess: list[float] = []
    waits: list[float] = []
    parts: dict[str, list[float]] = {"accept": [], "queue_beyond_slot": [], "trip": []}
    for key, at in sent_at.items():
        row = probe_rows.get(key)
        if row is None:
            continue
        slot = min(next_free(logs[i], caps(i), at) for i in range(PHONES))
        waits.append((row["asked"] - at) * 1000)
        excess.append((row["asked"] - slot) * 1000)
        created, claimed = stamps.get(key, (None, None))
        if created is not None and claimed is not None:
            parts["accept"].append((created - at) * 1000)
            parts["queue_beyond_slot"].append((claimed - max(created, slot)) * 1000)
            parts["trip"].append((row["asked"] - claimed) * 1000)
    results["probes_reached"] = len(excess)
    if excess:
        results["probe_excess_p99_ms"] = p99(excess)
        results["probe_excess_p50_ms"] = statistics.median(excess)
        results["probe_wait_p50_ms"] = statistics.median(waits)
        results["probe_wait_max_ms"] = max(waits)
        for name, values in parts.items():
            if values:
                results[f"probe_{name}_p50_ms"] = statistics.median(values)
                results[f"probe_{name}_p99_ms"] = p99(values)
    return results


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99 + 0.5) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--probes", type=int, default=100)
    args = parser.parse_args()
    print(f"load {os.getloadavg()}", flush=True)
    results: dict[str, Any] = {"load_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="simbridge-bench-fleet-") as tmp:
        results.update(asyncio.run(run(Path(tmp), args.messages, args.probes)))
    for key in ("cap_violations", "cap_headroom_min_ms", "rate_used_pct", "probe_excess_p99_ms", "probe_excess_p50_ms",
                "probe_wait_p50_ms", "refused_by_phones"):
        if key in results:
            print(f"{key:22s} {results[key]:10.1f}" if isinstance(results[key], float) else
                  f"{key:22s} {results[key]:10d}", flush=True)
    results["load_end"] = [round(x, 2) for x in os.getloadavg()]
    results["cores"] = os.cpu_count()
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
