"""Modem benchmark: ``python -m bench.modem [--quick] [--count N]``.

Prints, the last line one JSON object:

- ``pdu_encodes_per_s`` / ``pdu_decodes_per_s``: the PDU codec alone (a
  one-part GSM-7 SMS-SUBMIT; an SMS-DELIVER), in this process;
- ``simbridge_sms_per_s``: SMS per second through one virtual modem
  (``simbridge modem-sim``, no artificial latency, in a process of its own)
  driven by the real daemon (``simbridge run``, also a process of its own,
  the modem agent inside it): N messages posted to the HTTP API in one
  request, counted on the modem's radio log from the first transmission to
  the last;
- ``gammu_smsd_sms_per_s``: the same with Debian's gammu-smsd (files
  backend, N files in its outbox) driving a fresh virtual modem of the same
  kind, counted the same way; null (and said so) if gammu-smsd is not
  installed;
- ``ratio``: simbridge / gammu-smsd (the target is ≥ 2).

Both drivers send one-part SMS without status reports, and both are measured
at steady state (first to last transmission), so their start-up does not
count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device_agents.modem import pdu

TEXT = "Your simbridge code is 481516. It expires in 10 minutes."
ACCOUNT, KEY = "bench@example.com", "bench-access-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def numbers(count: int) -> list[str]:
    return [f"+336{12000000 + i:08d}" for i in range(count)]


# -- the codec ---------------------------------------------------------------------


def codec_rates(seconds: float) -> tuple[float, float]:

    deliver = pdu.encode_deliver("+33612345678", TEXT, timestamp=datetime.now(UTC).replace(microsecond=0),
                                 smsc="+33689004000").hex()

    def rate(fn: Any) -> float:
        n, start = 0, time.perf_counter()
        while True:
            for _ in range(500):
                fn()
            n += 500
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return n / elapsed

    encodes = rate(lambda: pdu.encode_submit("+33612345678", TEXT, concat_ref=1))
    decodes = rate(lambda: pdu.decode(deliver))
    return encodes, decodes


# -- the virtual modem -------------------------------------------------------------


@contextlib.contextmanager
def modem_sim(folder: Path, name: str) -> Iterator[tuple[Path, Path]]:
    link, radio = folder / name, folder / f"{name}-radio.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "device_agents.modem.sim_cli", "--link", str(link),
                             "--radio-log", str(radio), "--report-delay", "3600", "--latency", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "->" not in line:
            raise RuntimeError(f"modem-sim did not start: {line!r}")
        yield link, radio
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def radio_times(radio: Path) -> list[float]:
    if not radio.exists():
        return []
    out = []
    for line in radio.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("kind") == "sms":
                out.append(datetime.fromisoformat(record["at"].replace("Z", "+00:00")).timestamp())
    return out


def wait_for(radio: Path, count: int, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        times = radio_times(radio)
        if len(times) >= count:
            return times
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(times)} of {count} SMS transmitted within {timeout:g} s")
        time.sleep(0.05)


def steady_rate(times: list[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


# -- simbridge ------------------------------------------------------------------------


async def post(api: str, messages: list[dict[str, Any]]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.post(f"{api}/api/v1/sendsms",
                         json={"header": {"login": ACCOUNT, "accessKey": KEY}, "messages": messages}) as resp:
        body = await resp.json()
        if resp.status != 200 or not all(m.get("sent") == 1 for m in body):
            raise RuntimeError(f"sendsms failed: {resp.status} {str(body)[:200]}")


def simbridge_rate(folder: Path, count: int) -> float:
    folder.mkdir()
    with modem_sim(folder, "modem") as (link, radio):
        api_port, agents_port = free_port(), free_port()
        config = folder / "simbridge.toml"
        config.write_text(f"""
[api]
listen = "127.0.0.1:{api_port}"
[agents]
listen = "127.0.0.1:{agents_port}"
[store]
path = "{folder / 'simbridge.db'}"
[[accounts]]
login = "{ACCOUNT}"
access_key = "{KEY}"
[[devices]]
id = "m1"
kind = "modem"
account = "{ACCOUNT}"
port = "{link}"
max_per_minute = 0
delivery_reports = false
""")
        daemon = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=open(folder / "daemon.log", "w"))  # noqa: SIM115 - the child holds it
        try:
            api = f"http://127.0.0.1:{api_port}"
            deadline = time.monotonic() + 30
            while True:  # warm-up: one SMS through, so the modem is online
                try:
                    asyncio.run(post(api, [{"phone_number": "+33699999999", "message": "warm-up"}]))
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            wait_for(radio, 1, 30)
            asyncio.run(post(api, [{"phone_number": n, "message": TEXT} for n in numbers(count)]))
            times = wait_for(radio, count + 1, 300)[1:]
            return steady_rate(times)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()


# -- gammu-smsd -------------------------------------------------------------------------


def gammu_rate(folder: Path, count: int) -> float:
    folder.mkdir()
    dirs = {d: folder / d for d in ("inbox", "outbox", "sent", "error")}
    for d in dirs.values():
        d.mkdir()
    with modem_sim(folder, "modem") as (link, radio):
        config = folder / "smsdrc"
        config.write_text(f"""[gammu]
device = {link}
connection = at

[smsd]
service = files
inboxpath = {dirs['inbox']}/
outboxpath = {dirs['outbox']}/
sentsmspath = {dirs['sent']}/
errorsmspath = {dirs['error']}/
logfile = {folder / 'smsd.log'}
debuglevel = 0
checksecurity = 0
checkbattery = 0
checksignal = 0
checknetwork = 0
statusfrequency = 0
receivefrequency = 3600
commtimeout = 1
loopsleep = 0
deliveryreport = no
""")
        stamp = time.strftime("%Y%m%d_%H%M%S")
        for i, number in enumerate(numbers(count)):
            tmp = folder / f"tmp{i}"
            tmp.write_text(TEXT)
            tmp.rename(dirs["outbox"] / f"OUTC{stamp}_{i:05d}_{number}_bench.txt")
        smsd = subprocess.Popen(["gammu-smsd", "-c", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            times = wait_for(radio, count, 600)
            return steady_rate(times)
        finally:
            smsd.send_signal(signal.SIGTERM)
            try:
                smsd.wait(15)
            except subprocess.TimeoutExpired:
                smsd.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modem", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, shorter codec runs")
    parser.add_argument("--count", type=int, help="SMS per driver (default 150; 40 with --quick)")
    args = parser.parse_args(argv)
    count = args.count or (40 if args.quick else 150)

    encodes, decodes = codec_rates(0.3 if args.quick else 1.0)
    print(f"PDU codec:   {encodes:10,.0f} encodes/s   {decodes:10,.0f} decodes/s")

    with tempfile.TemporaryDirectory(prefix="simbridge-bench-modem-") as tmp:
        ours = simbridge_rate(Path(tmp) / "simbridge", count)
        print(f"simbridge:   {ours:10,.1f} SMS/s through one virtual modem ({count} SMS, daemon + modem agent)")
        theirs: float | None = None
        if shutil.which("gammu-smsd") is None:
            print("gammu-smsd:  not installed (apt-get install -y gammu gammu-smsd): skipped")
        else:
            theirs = gammu_rate(Path(tmp) / "gammu", count)
            print(f"gammu-smsd:  {theirs:10,.1f} SMS/s through the same kind of virtual modem "
                  f"({count} SMS, files backend)")
    ratio = ours / theirs if theirs else None
    if ratio is not None:
        print(f"ratio:       {ratio:10.2f} x  (target >= 2)")
    print(json.dumps({"pdu_encodes_per_s": round(encodes), "pdu_decodes_per_s": round(decodes),
                      "simbridge_sms_per_s": round(ours, 1),
                      "gammu_smsd_sms_per_s": round(theirs, 1) if theirs else None,
                      "ratio": round(ratio, 2) if ratio else None, "count": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
