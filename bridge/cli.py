"""``simbridge``: the daemon and its tools."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from bridge import config as config_module
from bridge.config import Config, ConfigError
from bridge.ops import client, logs

DEFAULT_CONFIG = "/etc/simbridge/config.toml"
DEMO_DIR = "simbridge-demo"
YOUNG_GENERATION = 20_000  # objects allocated (net) between two collections of the youngest generation
SWITCH_INTERVAL_S = 0.0002  # how long a thread holds the interpreter lock while another waits for it


def _config_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-c", metavar="FILE", required=required,
                   default=None if required else os.environ.get("SIMBRIDGE_CONFIG", DEFAULT_CONFIG),
                   help=f"configuration file (default: $SIMBRIDGE_CONFIG or {DEFAULT_CONFIG})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simbridge", description="Self-hosted phone gateway "
                                     "(inSIM-compatible SMS and call API over Android phones and GSM modems)")
    parser.add_argument("--log-level", default=os.environ.get("SIMBRIDGE_LOG_LEVEL", "INFO"),
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--log-format", default=os.environ.get("SIMBRIDGE_LOG_FORMAT", "text"),
                        choices=logs.FORMATS, help="text (default) or json: one JSON object a line, "
                        "for journald and log shippers")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    _config_arg(run)
    run.add_argument("--demo", action="store_true",
                     help=f"no config needed: API on 127.0.0.1:8080, data in ./{DEMO_DIR}, one virtual phone")
    run.add_argument("--data-dir", metavar="DIR", help=f"with --demo: where data goes (default ./{DEMO_DIR})")

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    _config_arg(check)

    sim = sub.add_parser("simulate", help="make a virtual device receive something (daemon must run)")
    sim_sub = sim.add_subparsers(dest="what", required=True, metavar="WHAT")
    sms = sim_sub.add_parser("incoming-sms", help="an SMS arrives on a virtual phone")
    _config_arg(sms)
    sms.add_argument("--from", dest="sender", required=True, metavar="NUMBER")
    sms.add_argument("--device", help="virtual device id (default: the account's first)")
    sms.add_argument("--account", help="account login (default: the first with a virtual device)")
    sms.add_argument("text")
    call = sim_sub.add_parser("call", help="a call reaches a virtual phone")
    _config_arg(call)
    call.add_argument("--from", dest="sender", required=True, metavar="NUMBER")
    call.add_argument("--device")
    call.add_argument("--account")
    group = call.add_mutually_exclusive_group()
    group.add_argument("--missed", action="store_true", help="the call rang and nobody answered")
    group.add_argument("--duration", type=float, default=0.0, metavar="SECONDS", help="answered, lasted this long")

    send = sub.add_parser("send", help="queue one SMS through the running daemon's API")
    _config_arg(send)
    send.add_argument("--account")
    send.add_argument("--priority", type=int, choices=(0, 1, 2), default=1)
    send.add_argument("number")
    send.add_argument("text")

    hooks = sub.add_parser("webhooks", help="webhook events given up on: list them, send them again "
                                            "(daemon must run)")
    hooks_sub = hooks.add_subparsers(dest="what", required=True)
    dead = hooks_sub.add_parser("dead", help="list the account's dead webhook events")
    replay = hooks_sub.add_parser("replay", help="send dead webhook events again (all, or the ids given)")
    for p in (dead, replay):
        _config_arg(p)
        p.add_argument("--account")
    replay.add_argument("ids", nargs="*", type=int, metavar="ID")

    devices = sub.add_parser("devices", help="devices and their health (daemon must run)")
    _config_arg(devices)
    devices.add_argument("--json", action="store_true", help="print a JSON array")

    pair = sub.add_parser("pair", help="pair a device: a token and its QR code (or --revoke)")
    _config_arg(pair)
    pair.add_argument("--device", required=True, metavar="ID", help="the device's id in the configuration")
    pair.add_argument("--png", metavar="FILE", help="also write the QR code to this PNG file")
    pair.add_argument("--url", help="the agent listener's URL as the phone reaches it "
                      "(default: [agents] public_url, else from [agents] listen)")
    pair.add_argument("--revoke", action="store_true",
                      help="revoke the device's pairing tokens (and disconnect it if the daemon runs)")
    pair.add_argument("--no-qr", action="store_true", help="print the URI only")

    doctor = sub.add_parser("doctor", help="check the installation; says what to fix (exit 1 if something is wrong)")
    _config_arg(doctor)

    sub.add_parser("pdu", help="encode or decode SMS PDUs (see: simbridge pdu --help)", add_help=False)
    sub.add_parser("modem-sim", help="a virtual GSM modem on a pseudo-terminal", add_help=False)
    sub.add_parser("phone-sim", help="a virtual Android phone behind the real adb server", add_help=False)
    return parser


def _load(path: str) -> Config:
    return config_module.load(path)


def _demo_config(data_dir: str | None) -> Config:
    return config_module.demo(Path(data_dir or DEMO_DIR).resolve())


def _setup_logging(level: str, fmt: str = "text") -> None:
    logs.setup(level, fmt)


def demo_curl(config: Config) -> str:
    account = config.accounts[0]
    body = json.dumps({"header": {"login": account.login, "accessKey": account.access_key},
                       "messages": [{"phone_number": "+33612345678",
                                     "message": "Hello from simbridge!"}]})
    return (f"curl -s -X POST http://{config.api.listen[0]}:{config.api.listen[1]}/api/v1/sendsms "
            f"-H 'Content-Type: application/json' -d '{body}'")


async def _run_daemon(config: Config, *, demo: bool) -> int:
    from bridge.daemon import Daemon, install_signal_handlers

    stop = asyncio.Event()
    daemon = Daemon(config, eager_workers=True)
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        # A bad file leaves the running configuration as it is.
        try:
            new = await asyncio.to_thread(config_module.load, daemon.config.source)
        except ConfigError as exc:
            logging.getLogger("bridge.cli").error("reload refused, keeping the running configuration: %s", exc)
            daemon.notifier.ready(f"reload refused: {exc}"[:200])
            return
        await daemon.reload(new)

    def on_hup() -> None:
        if not daemon.ready.is_set() or stop.is_set():
            return
        task = asyncio.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    install_signal_handlers(stop, on_hup)
    task = asyncio.create_task(daemon.run(stop))
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if daemon.ready.is_set():
        # What the start loaded (modules, number metadata, the configuration) lives as long as the
        # daemon: out of the collector's way, a full collection no longer walks it again and again
        # (each accepted batch makes thousands of short-lived objects, and triggers collections).
        gc.collect()
        gc.freeze()
        # And a young generation larger than what a bulk request keeps alive at once (~10 objects a
        # message, two 1,000-message requests at a time): with the default (700), such a batch set
        # off a collection every few dozen messages, walking the batch's live objects again each
        # time: ~2.5 µs a message, a tenth of the daemon's CPU on the accept path
        # (docs/benchmarks.md). Cyclic garbage (rare here) waits for at most that many objects: a few MB.
        gc.set_threshold(YOUNG_GENERATION, *gc.get_threshold()[1:])
        # The store's writes run on their own thread, and every write waits for it: back from
        # SQLite (which runs without the interpreter lock), it waits for the lock until the event
        # loop's thread gives it up, at most the switch interval. 1 ms instead of 5: bulk acceptance
        # +7 % at the same CPU; 0.2 instead of 1 once the store thread was left with little but its
        # statements (its waits then were most of its time): +5 % (docs/benchmarks.md). An idle
        # daemon switches no more than before: no thread waits for the lock.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    if daemon.ready.is_set() and demo:
        account = config.accounts[0]
        host, port = config.api.listen
        print(f"\nsimbridge is running in demo mode (data in {config.data_dir}). Send a first SMS:\n\n"
              f"  {demo_curl(config)}\n\nthen follow it:\n\n"
              f"  curl -s -H 'Authorization: Bearer {account.access_key}' "
              f"http://{host}:{port}/api/v1/sms/<id_sms_api>\n\n"
              f"what the virtual phone transmitted: {config.data_dir / 'virtual-virtual-1-radio.jsonl'}\n",
              flush=True)
    ready.cancel()
    await task
    return 0


def _api_call(config: Config, method: str, path: str, account_login: str | None,
              body: Any = None) -> Any:
    accounts = [a for a in config.accounts if account_login in (None, a.login)]
    if not accounts:
        raise SystemExit(f"simbridge: no account {account_login!r} in {config.source}")
    try:
        return client.request(config, method, path, key=accounts[0].access_key, body=body)
    except client.DaemonError as exc:
        raise SystemExit(f"simbridge: {exc}") from None
    except client.DaemonUnreachable as exc:
        raise SystemExit(f"simbridge: {exc}; is it running?") from None


def _simulate(config: Config, args: argparse.Namespace) -> int:
    login = args.account
    if login is None:
        for device in config.devices:
            if device.kind == "virtual" and (args.device in (None, device.id)):
                login = device.account
                break
        else:
            raise SystemExit(f"simbridge: no virtual device in {config.source}")
    body: dict[str, Any] = {"from": args.sender}
    if args.device:
        body["device"] = args.device
    if args.what == "incoming-sms":
        body["text"] = args.text
    else:
        body["missed"] = args.missed
        body["duration"] = args.duration
    result = _api_call(config, "POST", f"/api/v1/simulate/{args.what}", login, body)
    print(json.dumps(result["data"]))
    return 0


def _send(config: Config, args: argparse.Namespace) -> int:
    login = args.account or (config.accounts[0].login if config.accounts else None)
    account = config.account(login) if login else None
    if account is None:
        raise SystemExit(f"simbridge: no account to send from in {config.source}")
    body = {"header": {"login": account.login, "accessKey": account.access_key},
            "messages": [{"phone_number": args.number, "message": args.text, "priorite": args.priority}]}
    result = _api_call(config, "POST", "/api/v1/sendsms", account.login, body)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if all(r.get("sent") for r in result) else 1


def _ago(ts: Any, now: float) -> str:
    if not isinstance(ts, (int, float)):
        return "never"
    seconds = max(0, now - ts)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _percent(value: Any) -> str:
    return f"{value}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def devices_table(rows: list[dict[str, Any]], *, now: float | None = None) -> str:
    """The human table of ``simbridge devices``; NODE is the daemon (box) that holds the device, or
    last held it (``[store] node``: several daemons on one PostgreSQL store show every box's devices)."""
    now = time.time() if now is None else now
    cols = ("DEVICE", "NODE", "KIND", "ACCOUNT", "STATE", "SIGNAL", "BATTERY", "NETWORK", "LAST SEEN", "REASON")
    table = [[str(r.get("id", "?")), str(r.get("node") or "-"), str(r.get("kind", "?")), str(r.get("account", "?")),
              str(r.get("state", "?")) + (f" ({r['step']})" if r.get("step") else ""),
              _percent(r.get("signal")), _percent(r.get("battery")),
              " ".join(str(r[k]) for k in ("network", "operator") if r.get(k)) or "-",
              _ago(r.get("last_seen"), now), str(r.get("reason") or "-")] for r in rows]
    widths = [max([len(c), *(len(t[i]) for t in table)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table]
    online = sum(1 for r in rows if r.get("state") == "online")
    lines.append(f"\n{online} of {len(rows)} device(s) online")
    return "\n".join(lines)


def _devices(config: Config, args: argparse.Namespace) -> int:
    try:
        rows = client.devices(config)
    except client.DaemonError as exc:
        raise SystemExit(f"simbridge: {exc}") from None
    except client.DaemonUnreachable as exc:
        raise SystemExit(f"simbridge: {exc}; is it running?") from None
    rows.sort(key=lambda r: (str(r.get("account")), str(r.get("id"))))
    try:
        fault = client.store_fault(config)
    except (client.DaemonError, client.DaemonUnreachable) as exc:
        fault = f"unknown ({exc})"
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(devices_table(rows))
    if fault is not None:  # on stderr too with --json: the array stays what it was
        print(f"\nSTORE FAULT: the store takes no writes: {fault}; the API refuses with 503 "
              "(docs/operations.md, Storage faults)", file=sys.stderr if args.json else sys.stdout)
        return 1
    return 0


def _webhooks(config: Config, args: argparse.Namespace) -> int:
    if args.what == "dead":
        rows = _api_call(config, "GET", "/api/v1/webhooks/dead?take=1000", args.account)["data"]
        for r in rows:
            print(f"{r['id']}\t{r['event']}\t{r['created_at']}\t{r['attempts']} attempt(s)\t{r['last_error']}")
        print(f"{len(rows)} dead webhook event(s)")
        return 0
    body = {"ids": args.ids} if args.ids else {}
    replayed = _api_call(config, "POST", "/api/v1/webhooks/replay", args.account, body)["data"]["replayed"]
    print(f"{replayed} webhook event(s) will be sent again")
    return 0


def _pair(config: Config, args: argparse.Namespace) -> int:
    from bridge.ops.pair import pair, revoke

    if args.revoke:
        print(revoke(config, args.device))
        return 0
    return pair(config, args.device, url=args.url, png=args.png, qr=not args.no_qr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Sub-tools with their own parsers.
    if argv and argv[0] == "pdu":
        from device_agents.modem import pdu_cli
        return pdu_cli.main(argv[1:])
    if argv and argv[0] == "modem-sim":
        from device_agents.modem import sim_cli
        return sim_cli.main(argv[1:])
    if argv and argv[0] == "phone-sim":
        from device_agents.android.phone_sim import cli as phone_sim_cli
        return phone_sim_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    try:
        if args.command == "run":
            config = _demo_config(args.data_dir) if args.demo else _load(args.config)
            return asyncio.run(_run_daemon(config, demo=args.demo))
        if args.command == "doctor":
            from bridge.ops.doctor import doctor
            return doctor(args.config)
        config = _load(args.config)
        if args.command == "check-config":
            print(f"{config.source}: OK ({len(config.accounts)} account(s), {len(config.devices)} device(s))")
            return 0
        if args.command == "simulate":
            return _simulate(config, args)
        if args.command == "send":
            return _send(config, args)
        if args.command == "devices":
            return _devices(config, args)
        if args.command == "webhooks":
            return _webhooks(config, args)
        if args.command == "pair":
            return _pair(config, args)
    except ConfigError as exc:
        print(f"simbridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
