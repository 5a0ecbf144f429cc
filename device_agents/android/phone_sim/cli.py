"""``simbridge phone-sim``: one virtual Android phone behind the real adb server.

    simbridge phone-sim [--port 5555] [--serial SIMPHONE01] [--apps smsgate,termux]
        [--data DIR] [--loopback 127.0.0.2] [--control DIR/control.sock]
        [--no-auth] [--timezone Europe/Paris]

Prints ``phone-sim: adb connect 127.0.0.1:PORT`` once adbd listens, then runs
until SIGINT/SIGTERM. The first ``adb connect`` from an adb server whose key the
phone does not know leaves it ``unauthorized``: tap Allow with
``--allow-usb-debugging`` given up front, or a control request
``{"op": "allow_usb_debugging"}``. See docs/phone-sim.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from .control import serve_control
from .phone import VirtualPhone

APPS = ("smsgate", "termux")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simbridge phone-sim",
                                description="A virtual Android phone at adbd's boundary.")
    p.add_argument("--port", type=int, default=5555, help="adbd's TCP port (adb connect 127.0.0.1:PORT)")
    p.add_argument("--serial", default="SIMPHONE01", help="ro.serialno")
    p.add_argument("--apps", default="smsgate,termux",
                   help=f"helper apps installed, comma-separated, from: {', '.join(APPS)} ('' for none)")
    p.add_argument("--data", type=Path, help="folder for the phone's state (kept across restarts)")
    p.add_argument("--loopback", default="127.0.0.2",
                   help="the address on this machine that is the phone's own 127.0.0.1")
    p.add_argument("--control", help="unix socket for JSON-lines test hooks (default: DATA/control.sock)")
    p.add_argument("--no-auth", action="store_true", help="ro.adb.secure=0: no 'Allow USB debugging?' dialog")
    p.add_argument("--allow-usb-debugging", action="store_true",
                   help="tap Allow (always) on every USB-debugging dialog as it appears")
    p.add_argument("--timezone", default="Europe/Paris", help="persist.sys.timezone")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def install_apps(phone: VirtualPhone, names: list[str]) -> None:
    for name in names:
        if name == "smsgate":
            from .smsgate import SmsGateApp
            phone.install(SmsGateApp(phone))
        elif name == "termux":
            from .termux import install_termux
            install_termux(phone)
        else:
            raise SystemExit(f"phone-sim: unknown app {name!r} (choose from {', '.join(APPS)})")


async def _serve(args: argparse.Namespace) -> int:
    phone = VirtualPhone(serial=args.serial, data_dir=args.data, port=args.port, loopback=args.loopback,
                         require_auth=not args.no_auth, timezone=args.timezone)
    install_apps(phone, [a for a in args.apps.split(",") if a.strip()])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await phone.start()
    control_path = args.control or str(phone.data_dir / "control.sock")
    await asyncio.to_thread(Path(control_path).unlink, missing_ok=True)
    control = await serve_control(phone, control_path)
    print(f"phone-sim: adb connect {phone.address}", flush=True)
    print(f"phone-sim: control socket {control_path}; the phone's 127.0.0.1 is {phone.loopback}", flush=True)
    for app in phone.apps.values():
        print(f"phone-sim: {app.package.name} screen: {json.dumps(app.screen())}", flush=True)

    async def auto_allow() -> None:
        while True:
            await phone.auth.changed.wait()
            phone.auth.changed.clear()
            if phone.auth.pending:
                print(f"phone-sim: Allow USB debugging? {len(phone.auth.pending)} key(s) -> Allow", flush=True)
                phone.allow_usb_debugging()

    watcher = asyncio.ensure_future(auto_allow()) if args.allow_usb_debugging else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        control.close()
        await phone.stop()
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))
