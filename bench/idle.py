"""Idle benchmark: ``python -m bench.idle [--devices N ...] [--window S]``.

The real daemon (``simbridge run``) in a process of its own with N devices
configured, and N real agents (virtual phones, ``python -m
device_agents.virtual``) connected to it over websockets from a second
process, with the agents' own heartbeat (a websocket ping every 20 s) and
status reports (looked at every 30 s, sent when changed, as every agent; a
virtual phone's never changes: ``--changing-status`` sends one every 30 s, as
a phone whose signal moves all the time would). Nothing is sent. Once every
device is online and a settling time has passed, the daemon's CPU time (user + system, from
/proc) is read over a window; the figure is that time as a percentage of one
core. The last line is one JSON object: ``idle_cpu_pct`` per device count.
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

from bench.pipeline import free_port, wait_api

ACCOUNT = "idle@example.com"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def write_config(folder: Path, api: int, agents: int, devices: int) -> Path:
    lines = [f'[api]\nlisten = "127.0.0.1:{api}"\n',
             f'[agents]\nlisten = "127.0.0.1:{agents}"\nmax_unauthenticated = {max(64, devices)}\n',
             f'[store]\npath = "{folder / "data" / "simbridge.db"}"\n',
             f'[[accounts]]\nlogin = "{ACCOUNT}"\naccess_key = "key-{ACCOUNT}"\n']
    for i in range(devices):
        lines.append(f'[[devices]]\nid = "dev-{i}"\nkind = "virtual"\naccount = "{ACCOUNT}"\n'
                     f'standalone = true\ntoken = "token-{i}"\n')
    path = folder / "config.toml"
    path.write_text("\n".join(lines))
    return path


async def measure(folder: Path, devices: int, settle: float, window: float,
                  changing_status: bool = False) -> dict[str, float]:
    api, agents = free_port(), free_port()
    config = write_config(folder, api, agents, devices)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
    daemon = subprocess.Popen([sys.executable, *profile, "-m", "bridge.cli", "--log-level", "WARNING",  # noqa: ASYNC220
                               "run", "--config", str(config)], env=env)
    phones = None
    base = f"http://127.0.0.1:{api}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await wait_api(http, base, daemon)
            if devices:
                (folder / "phones").mkdir()
                args = [sys.executable, "-m", "device_agents.virtual", "--url", f"ws://127.0.0.1:{agents}",
                        "--data-dir", str(folder / "phones")] + (["--signal-wander", "5"] if changing_status else [])
                for i in range(devices):
                    args += ["--device", f"dev-{i}", "--token", f"token-{i}"]
                phones = subprocess.Popen(args, env=env)  # noqa: ASYNC220 - once, before the window
                deadline = time.monotonic() + 300
                online = 0
                while time.monotonic() < deadline:
                    async with http.get(f"{base}/api/v1/devices",
                                        headers={"Authorization": f"Bearer key-{ACCOUNT}"}) as resp:
                        online = sum(d["state"] == "online" for d in (await resp.json())["data"])
                    if online == devices:
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise RuntimeError(f"only {online} of {devices} devices came online")
        await asyncio.sleep(settle)
        before, start = cpu_times(daemon.pid), time.monotonic()
        await asyncio.sleep(window)
        after, elapsed = cpu_times(daemon.pid), time.monotonic() - start
        user, system = after[0] - before[0], after[1] - before[1]
        used = user + system
        if daemon.poll() is not None or (phones is not None and phones.poll() is not None):
            raise RuntimeError("a process exited during the window")
        return {"idle_cpu_pct": used / elapsed * 100, "cpu_s": used, "user_s": user, "system_s": system,
                "window_s": elapsed}
    finally:
        for proc in (phones, daemon):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, action="append", help="device counts (default: 0, 20, 1000)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the last came online")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of CPU time measured")
    parser.add_argument("--changing-status", action="store_true",
                        help="phones whose signal changes at every reading: a status frame each every 30 s")
    args = parser.parse_args()
    results: dict[str, object] = {"load_start": [round(x, 2) for x in os.getloadavg()],
                                  "changing_status": args.changing_status}
    print(f"load {os.getloadavg()}", flush=True)
    for count in args.devices or [0, 20, 1000]:
        with tempfile.TemporaryDirectory(prefix="simbridge-bench-idle-") as tmp:
            figures = asyncio.run(measure(Path(tmp), count, args.settle, args.window, args.changing_status))
        print(f"{count:5d} devices: idle CPU {figures['idle_cpu_pct']:.2f} % of a core "
              f"({figures['cpu_s']:.2f} s in {figures['window_s']:.0f} s: user {figures['user_s']:.2f}, "
              f"system {figures['system_s']:.2f})  load {os.getloadavg()}", flush=True)
        results[f"idle_cpu_pct_{count}"] = round(figures["idle_cpu_pct"], 3)
    results["load_end"] = [round(x, 2) for x in os.getloadavg()]
    results["cores"] = os.cpu_count()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
