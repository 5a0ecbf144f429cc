"""Memory benchmark: ``python -m bench.memory [--rounds N] [--messages N]``.

The real daemon (``simbridge run``) in a process of its own with 20 virtual
phones inside it (instant radios), the HTTP client here. It prints the RSS of
the daemon's whole process tree (the daemon and every process it started)
right after start, once the phones are online, and after each round of
``--messages`` messages (bulk sendsms, 1,000 a request, every message taken
to ``delivered``); the last line is one JSON object:

- ``rss_start_mb``, ``rss_online_mb``: at start, and with the 20 phones online;
- ``rss_rounds_mb``: after each round;
- ``rss_max_mb``: the largest of them (target: under 100);
- ``rss_spread_pct``: (largest - smallest) / smallest over the rounds, in %
  (target: within 5 % either way of their middle, i.e. a spread under 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.pipeline import BULK, count_state, free_port, numbers, post_bulk, until, wait_api

PHONES = 20
ACCOUNT = "memory@example.com"


def tree_rss_mb(root: int) -> float:
    """RSS of ``root`` and all its descendants, in MiB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total_kb = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def write_config(folder: Path, api: int, agents: int) -> Path:
    lines = [f'[api]\nlisten = "127.0.0.1:{api}"\n', f'[agents]\nlisten = "127.0.0.1:{agents}"\n',
             f'[store]\npath = "{folder / "data" / "simbridge.db"}"\nsynchronous = "full"\n',
             f'[[accounts]]\nlogin = "{ACCOUNT}"\naccess_key = "key-{ACCOUNT}"\n']
    for i in range(PHONES):
        lines.append(f'[[devices]]\nid = "phone-{i}"\nkind = "virtual"\naccount = "{ACCOUNT}"\n'
                     'max_per_minute = 0\nlatency = 0\njitter = 0\ndelivery_delay = 0\n')
    path = folder / "config.toml"
    path.write_text("\n".join(lines))
    return path


async def run(folder: Path, rounds: int, messages: int) -> dict[str, object]:
    api, agents = free_port(), free_port()
    config = write_config(folder, api, agents)
    daemon = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--log-level", "WARNING", "run",  # noqa: ASYNC220
                               "--config", str(config)], env=dict(os.environ, PYTHONUNBUFFERED="1"))
    base = f"http://127.0.0.1:{api}"
    db_path = folder / "data" / "simbridge.db"
    results: dict[str, object] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            await wait_api(http, base, daemon)
            start_mb = results["rss_start_mb"] = tree_rss_mb(daemon.pid)
            for _ in range(600):
                async with http.get(f"{base}/api/v1/devices",
                                    headers={"Authorization": f"Bearer key-{ACCOUNT}"}) as resp:
                    online = sum(d["state"] == "online" for d in (await resp.json())["data"])
                if online == PHONES:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"only {online} phones came online")
            online_mb = results["rss_online_mb"] = tree_rss_mb(daemon.pid)
            print(f"rss at start {results['rss_start_mb']:.1f} MiB, with {PHONES} phones online "
                  f"{results['rss_online_mb']:.1f} MiB", flush=True)
            url = f"{base}/api/v1/sendsms"
            rss_rounds: list[float] = []
            for r in range(rounds):
                start = time.perf_counter()
                sent = 0

                async def client(first: int, count: int) -> None:
                    for b in range(first, first + count, BULK):
                        await post_bulk(http, url, ACCOUNT, numbers(min(BULK, first + count - b), b))

                half = messages // 2
                await asyncio.gather(client(r * messages, half), client(r * messages + half, messages - half))
                sent = (r + 1) * messages
                def delivered(total: int = sent) -> bool:
                    return count_state(db_path, ACCOUNT, "delivered") >= total

                await until(delivered, 0.2)
                rss = tree_rss_mb(daemon.pid)
                rss_rounds.append(rss)
                print(f"round {r + 1}: {messages} messages delivered in {time.perf_counter() - start:.1f} s, "
                      f"rss {rss:.1f} MiB  load {os.getloadavg()}", flush=True)
            results["rss_rounds_mb"] = [round(x, 1) for x in rss_rounds]
            results["rss_max_mb"] = max([start_mb, online_mb, *rss_rounds])
            low = min(rss_rounds)
            results["rss_spread_pct"] = (max(rss_rounds) - low) / low * 100
            results["processes"] = 1 + len([p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == daemon.pid])
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
    return results


def _parent(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000, help="messages a round")
    args = parser.parse_args()
    print(f"load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="simbridge-bench-memory-") as tmp:
        results = asyncio.run(run(Path(tmp), args.rounds, args.messages))
    results["load"] = [round(x, 2) for x in os.getloadavg()]
    results["cores"] = os.cpu_count()
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    main()
