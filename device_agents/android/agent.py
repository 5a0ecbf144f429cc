"""The Android helper agent's entry point (runs on the phone, in Termux).

Started by the bridge through Termux's RUN_COMMAND intent as::

    python simbridge-agent.pyz --config /data/local/tmp/simbridge/<device>.json

The config file (JSON, written by the bridge) holds ``device_id``, ``token``,
``url`` (the bridge's agent listener as seen from the phone, through
``adb reverse``) and optionally ``timezone``, ``sim_slot``,
``poll_interval``, ``status_interval``, ``confirm_timeout``. The agent copies
it into its private data directory (``~/.simbridge``), so that it can also be
started again later without it.

Only one agent runs per device: a second start with the same archive and
config leaves the running one alone (that is what a replug does); one with a
different archive or config stops the old one and takes over.

Pure standard library plus ``websockets``, which the archive bundles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import logging.handlers
import os
import signal
import sys
import time
from typing import Any

from .. import pairing, protocol
from ..journal import Journal
from ..runtime import AgentRuntime
from . import AGENT_VERSION
from .backend import TermuxBackend
from .termux import PhoneClock, TermuxApi, detect_timezone

log = logging.getLogger("device_agents.android")

REQUIRED = ("device_id", "token", "url")


class ConfigError(Exception):
    pass


def load_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    for key in REQUIRED:
        if not isinstance(config.get(key), str) or not config[key]:
            raise ConfigError(f"{path}: key {key!r} must be a non-empty string")
    slot = config.get("sim_slot")
    if slot is not None and (not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot <= 8):
        raise ConfigError(f"{path}: key 'sim_slot' must be an integer from 0 to 8")
    return config


def config_from_uri(uri: str) -> dict[str, Any]:
    """The agent's config from a pairing URI (``simbridge pair``'s QR code)."""
    try:
        info = pairing.parse_uri(uri.strip())
    except pairing.PairingError as exc:
        raise ConfigError(f"not a pairing URI: {exc}") from None
    config: dict[str, Any] = {"device_id": info.device_id, "token": info.token, "url": info.url}
    if info.fingerprint:
        config["fingerprint"] = info.fingerprint
    return config


def _fingerprint(config: dict[str, Any]) -> str:
    h = hashlib.sha256(AGENT_VERSION.encode())
    h.update(json.dumps(config, sort_keys=True).encode())
    archive = sys.argv[0] if sys.argv and os.path.isfile(sys.argv[0]) else None
    if archive:
        with open(archive, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:32]


def take_lock(path: str, fingerprint: str, *, wait_s: float = 15.0) -> Any | None:
    """Hold the device's lock file, or None if an identical agent already runs."""
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open as the lock while the agent runs
    deadline = time.monotonic() + wait_s
    asked = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            pass
        if not asked:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            if holder.get("fingerprint") == fingerprint:
                f.close()
                return None
            pid = holder.get("pid")
            if isinstance(pid, int) and pid > 1:
                log.info("replacing the running agent (pid %d)", pid)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            asked = True
        if time.monotonic() > deadline:
            f.close()
            raise ConfigError("another agent holds the lock and does not stop")
        time.sleep(0.1)  # start-up only, before any event loop exists
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "fingerprint": fingerprint}))
    f.flush()
    return f


def _setup_logging(data_dir: str, verbose: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    root.addHandler(stream)
    with contextlib.suppress(OSError):
        # RUN_COMMAND's background output goes nowhere: keep a log on the phone.
        file = logging.handlers.RotatingFileHandler(os.path.join(data_dir, "agent.log"),
                                                    maxBytes=1_000_000, backupCount=2)
        file.setFormatter(fmt)
        root.addHandler(file)


async def run_agent(config: dict[str, Any], data_dir: str, *, termux_bin: str | None = None) -> None:
    device_id = config["device_id"]
    tz = config.get("timezone") or detect_timezone()
    clock = PhoneClock(tz)
    backend = TermuxBackend(
        api=TermuxApi(bin_dir=termux_bin), clock=clock,
        state_path=os.path.join(data_dir, f"{device_id}-state.json"),
        sim_slot=config.get("sim_slot"),
        poll_interval=float(config.get("poll_interval", 2.0)),
        status_interval=float(config.get("status_interval", 30.0)),
        confirm_timeout=float(config.get("confirm_timeout", 120.0)))
    await backend.refresh_status()  # so that the hello knows about a second SIM
    await backend.prime()
    slot = config.get("sim_slot")
    pin = pairing.PairingInfo(url=config["url"], device_id=device_id, token=config["token"],
                              fingerprint=config.get("fingerprint"))
    runtime = AgentRuntime(
        url=config["url"], device_id=device_id, token=config["token"], backend=backend,
        journal=Journal(os.path.join(data_dir, f"{device_id}-journal.jsonl"), fsync=True),
        agent_name=f"simbridge-android/{AGENT_VERSION}",
        window=int(config.get("window", 4)),
        status_interval=float(config.get("status_interval", 30.0)),
        sims=(protocol.Sim(slot=slot),) if slot is not None else (),
        timezone=tz, backoff_max=float(config.get("backoff_max", 5.0)),
        ssl=pairing.client_ssl_context(pin), on_connect=lambda ws: pairing.check_pin(ws.transport, pin))
    backend.attach(runtime.try_emit)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(runtime.run())
            tg.create_task(backend.run())
    finally:
        await runtime.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simbridge-agent", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config JSON pushed by the bridge")
    parser.add_argument("--device", help="run from the private copy of this device's config")
    parser.add_argument("--pair", metavar="URI",
                        help="pair with a bridge: the simbridge://pair?… URI of `simbridge pair`'s QR code")
    parser.add_argument("--data-dir", default=os.path.join(os.path.expanduser("~"), ".simbridge"))
    parser.add_argument("--termux-bin", help="directory of the termux-* commands (default: PATH)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.data_dir, mode=0o700, exist_ok=True)
    _setup_logging(args.data_dir, args.verbose)
    try:
        if args.config and args.device and not os.path.exists(args.config):
            # The bridge removes the pushed copy (it holds the token) once an
            # agent has connected: run from the private copy.
            args.config = None
        if args.pair or args.config:
            config = config_from_uri(args.pair) if args.pair else load_config(args.config)
            private = os.path.join(args.data_dir, f"{config['device_id']}-config.json")
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(config, f)
        elif args.device:
            config = load_config(os.path.join(args.data_dir, f"{args.device}-config.json"))
        else:
            parser.error("give --config FILE or --device ID")
        lock = take_lock(os.path.join(args.data_dir, f"{config['device_id']}.lock"),
                         _fingerprint(config))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if lock is None:
        log.info("agent for %s already running; nothing to do", config["device_id"])
        return 0
    log.info("agent %s for device %s starting (pid %d)", AGENT_VERSION, config["device_id"],
             os.getpid())

    async def _main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await run_agent(config, args.data_dir, termux_bin=args.termux_bin)

    try:
        asyncio.run(_main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        pass
    finally:
        log.info("agent for %s stopped", config["device_id"])
        lock.close()
    return 0
