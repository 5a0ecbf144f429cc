"""Run virtual phones as agents of their own, against a bridge elsewhere:

    python -m device_agents.virtual --url ws://127.0.0.1:8765 --device sim-1 --token T [--device sim-2 --token T2 …]

The daemon runs its virtual devices itself; this is for a device marked
``standalone = true`` (and for load tests, where the phones get a process of
their own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from pathlib import Path

from ..journal import Journal
from ..runtime import AgentRuntime
from .phone import RadioSettings, VirtualRadio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_agents.virtual")
    parser.add_argument("--url", required=True, help="the bridge's agent listener, ws://HOST:PORT")
    parser.add_argument("--device", action="append", required=True, help="device id (repeat for more)")
    parser.add_argument("--token", action="append", required=True, help="its token (one per --device)")
    parser.add_argument("--data-dir", type=Path, default=Path("."), help="journal and radio log folder")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--jitter", type=float, default=0.1)
    parser.add_argument("--delivery-delay", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--serial", action="store_true", help="one part at a time on the radio, as a phone")
    parser.add_argument("--cap-per-minute", type=int, default=0, help="the phone's own cap in parts (0: none)")
    parser.add_argument("--signal-wander", type=int, default=0,
                        help="benchmarks: each status reading's signal alternates between 75 and 75 minus this, "
                             "so that every status is sent (0: steady)")
    args = parser.parse_args(argv)
    if len(args.device) != len(args.token):
        parser.error("give one --token per --device")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = RadioSettings(latency=args.latency, jitter=args.jitter, delivery_delay=args.delivery_delay,
                             serial=args.serial, cap_per_minute=args.cap_per_minute,
                             signal_wander=args.signal_wander)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        async with asyncio.TaskGroup() as tg:
            for device, token in zip(args.device, args.token, strict=True):
                radio = VirtualRadio(device_id=device, settings=settings,
                                     radio_log=args.data_dir / f"virtual-{device}-radio.jsonl")
                runtime = AgentRuntime(url=args.url, device_id=device, token=token, backend=radio,
                                       journal=Journal(args.data_dir / f"virtual-{device}-journal.jsonl"),
                                       agent_name="simbridge-virtual/1", window=args.window,
                                       workers=args.window)
                tg.create_task(runtime.run())

    # What start-up built (modules, tables) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it (see simbridge run).
    gc.collect()
    gc.freeze()
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
