"""``simbridge modem-sim``: a virtual GSM modem on a pseudo-terminal.

    simbridge modem-sim --link /tmp/modem0 [--control /tmp/modem0.ctl]
        [--profile plain|quectel-ec25|simcom-sim7600|huawei-e173|cinterion-mc75i|csms1]
        [--number +33600000000] [--pin 1234] [--report-delay 1] [--latency 0]
        [--radio-log radio.jsonl] [--network-delay S] [--cms500-rate P] [--split-lines]
        [--urcs-in-replies]

Prints one line ``modem-sim: <link> -> /dev/pts/N`` (and the control socket)
once the device is ready, then runs until SIGINT/SIGTERM. Point gammu,
minicom or the modem agent at the link. See docs/modem.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from device_agents.modem.virtual import PROFILES, VirtualModem, profile_named
from device_agents.modem.virtual.faults import FaultOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simbridge modem-sim", description="A virtual GSM modem on a pseudo-terminal.")
    p.add_argument("--link", required=True, help="symlink to create to the pty slave, e.g. /tmp/modem0")
    p.add_argument("--control", help="unix socket for JSON-lines control requests")
    p.add_argument("--profile", default="plain", choices=sorted(PROFILES),
                   help="whose modem to behave like (docs/modem.md lists what each does)")
    p.add_argument("--network-delay", type=float, default=0.0, metavar="S",
                   help="fault: AT+CMGS's final result this much later (the SMS goes at once)")
    p.add_argument("--cms500-rate", type=float, default=0.0, metavar="P",
                   help="fault: this share of AT+CMGS ends in +CMS ERROR: 500")
    p.add_argument("--split-lines", action="store_true", help="fault: output in pieces cut anywhere")
    p.add_argument("--urcs-in-replies", action="store_true",
                   help="fault: unsolicited lines inside replies, SMS indications even mid-command")
    p.add_argument("--number", default="+33600000000", help="the SIM's own number (AT+CNUM)")
    p.add_argument("--pin", help="SIM PIN; when given the SIM starts locked")
    p.add_argument("--report-delay", type=float, default=1.0, metavar="S", help="seconds before a status report")
    p.add_argument("--latency", type=float, default=0.0, metavar="S", help="seconds before each reply block")
    p.add_argument("--radio-log", help="append every transmitted SMS (and ended call) here as JSON lines")
    p.add_argument("--capacity", type=int, default=30, help="SIM message storage slots")
    p.add_argument("--ring-interval", type=float, default=1.0, metavar="S")
    p.add_argument("--seed", type=int, help="seed for garbage bytes and concat references")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: info, -vv: every AT line")
    return p


async def _serve(args: argparse.Namespace) -> int:
    if not 0.0 <= args.cms500_rate <= 1.0:
        raise ValueError("--cms500-rate is a share between 0 and 1")
    faults = FaultOptions(network_delay=args.network_delay, cms500_rate=args.cms500_rate,
                          split_lines=args.split_lines, urcs_in_replies=args.urcs_in_replies)
    modem = VirtualModem(
        link=args.link,
        profile=profile_named(args.profile),
        faults=faults,
        number=args.number,
        pin=args.pin,
        report_delay=args.report_delay,
        latency=args.latency,
        radio_log=args.radio_log,
        capacity=args.capacity,
        ring_interval=args.ring_interval,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with modem:
        server = await modem.serve_control(args.control) if args.control else None
        print(f"modem-sim: {args.link} -> {modem.port} ({args.profile})", flush=True)
        if args.control:
            print(f"modem-sim: control socket {args.control}", flush=True)
        try:
            await stop.wait()
        finally:
            if server is not None:
                server.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(args.control)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"modem-sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
