"""The GSM modem agent: a USB modem (AT commands, PDU mode) as a simbridge device.

It speaks the device protocol like every agent, through
:class:`~device_agents.runtime.AgentRuntime`; this module is the modem side
(the runtime's *backend*) and the life cycle around it. It runs inside the
daemon (``kind = "modem"``) or standalone against a remote bridge::

    python -m device_agents.modem.agent --url ws://bridge:8765 --device ID --token T \\
        --port /dev/ttyUSB0 [--pin 1234] --journal FILE

Life cycle (docs/modem-agent.md has the long form)::

    open the port ──▶ init ──▶ online (runtime connected to the bridge)
       ▲   │ not there    │ wrong/missing PIN           │ port vanished / modem dead
       │   ▼              ▼                             ▼
       └─ backoff      parked (never retried)        offline ──▶ backoff ──▶ open …

While the modem is offline the agent is not connected to the bridge, so the
bridge does not push jobs to it. A job caught in flight stays ``sending`` in
the journal and is reconciled when the modem is back (:meth:`ModemAgent.recover`).

The parts, one concern each: :mod:`.session` (commands, reset, set-up),
:mod:`.incoming` (read, reassemble, report, delete after the ack),
:mod:`.outgoing` (send, status reports), :mod:`.dialer` (calls),
:mod:`.health` (signal and registration), :mod:`.durable` (the one state
file). Serial I/O runs in threads (:mod:`.serial_link`); one AT command at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import protocol
from ..runtime import AgentRuntime, Reporter
from ..tasks import TaskSet
from .at import Urc
from .dialer import CALL_URCS, Dialer
from .durable import ModemJournal
from .health import Health
from .incoming import Incoming
from .outgoing import Outgoing
from .serial_link import CommandError, CommandTimeout, LinkError, LinkLost, SerialLink
from .session import ModemSession
from .settings import ModemSettings, NotReady, Parked

__all__ = ["ModemAgent", "ModemSettings", "NotReady", "Parked", "journal_path_for", "main"]

log = logging.getLogger(__name__)

AGENT_NAME = "simbridge-modem/1"
# A modem that says it (re)started: configured again and its storage read. "+QIND: SMS DONE"
# (Quectel), "SMS DONE" (SIMCom), "^SYSSTART" (Cinterion) as their manuals give them.
READY_URCS = frozenset({"RDY", "+CPIN", "SMS READY", "SMS DONE", "+QIND", "^SYSSTART"})


def journal_path_for(data_dir: str | os.PathLike[str], device_id: str) -> Path:
    """Where the daemon keeps an in-daemon modem agent's journal (its one state file)."""
    return Path(data_dir) / f"modem-{device_id}-journal.jsonl"


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                walk(e)
        else:
            leaves.append(exc)

    walk(group)
    for kind in (Parked, LinkError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return group


@dataclass(slots=True)
class _Online:
    """The parts of one opened modem (rebuilt at every reopen)."""

    link: SerialLink
    session: ModemSession
    incoming: Incoming
    outgoing: Outgoing
    dialer: Dialer
    work: asyncio.Queue[tuple[Any, ...]]


class ModemAgent:
    """One modem: its life cycle, and the runtime's Backend while online."""

    def __init__(self, *, device_id: str, url: str, token: str, journal_path: str | os.PathLike[str],
                 settings: ModemSettings, window: int = 8, status_interval: float = 30.0, ssl: Any = None,
                 link_factory: Callable[..., SerialLink] = SerialLink) -> None:
        self.device_id = device_id
        self.url = url
        self.token = token
        self.journal_path = Path(journal_path)
        self.settings = settings
        self.window = window
        self.status_interval = status_interval
        self.ssl = ssl
        self.link_factory = link_factory
        self.capabilities = protocol.Capabilities(sms=True, calls=True, multipart=True,
                                                  delivery_reports=settings.delivery_reports)
        self.log = logging.LoggerAdapter(log, {"device": device_id})
        self.state = "starting"  # starting | online | offline | parked
        self.reason = ""
        self.online = asyncio.Event()
        self.runtime: AgentRuntime | None = None
        self.health = Health()
        self.model = ""
        self._parts: _Online | None = None
        self._timer_wake = asyncio.Event()
        self._reinit_queued = False
        self._stopping = False
        self._tasks = TaskSet()
        self._unmatched_reports: list[Any] = []  # outlives each opened modem's parts

    @classmethod
    def from_device(cls, device: Any, *, url: str, token: str, data_dir: str | os.PathLike[str],
                    window: int = 8, ssl: Any = None, **overrides: Any) -> ModemAgent:
        """The agent of a ``[[devices]]`` entry of kind ``modem`` (bridge.config.DeviceConfig)."""
        settings = ModemSettings.from_options(device.options, **overrides)
        return cls(device_id=device.id, url=url, token=token, settings=settings, window=window, ssl=ssl,
                   journal_path=journal_path_for(data_dir, device.id))

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state, self.reason = state, reason
        if state == "online":
            self.online.set()
        else:
            self.online.clear()

    # ------------------------------------------------------------------
    # the life cycle

    def _assemble(self, journal: ModemJournal) -> _Online:
        link = self.link_factory(self.settings.port, baudrate=self.settings.baudrate, on_urc=self._on_urc,
                                 command_timeout=self.settings.command_timeout, logger=self.log)
        session = ModemSession(link=link, settings=self.settings, journal=journal, log=self.log)
        work: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks = TaskSet()
        outgoing = Outgoing(session=session, journal=journal, holder=self, settings=self.settings,
                            tasks=self._tasks, log=self.log, unmatched=self._unmatched_reports)
        incoming = Incoming(session=session, journal=journal, holder=self, work=work,
                            multipart_timeout=self.settings.multipart_timeout,
                            duplicate_window=self.settings.duplicate_window,
                            on_status_report=outgoing.status_report, wake_timers=self._timer_wake.set,
                            log=self.log)
        dialer = Dialer(session=session, journal=journal, holder=self, settings=self.settings,
                        tasks=self._tasks, log=self.log)
        journal.on_ack = incoming.on_ack
        return _Online(link, session, incoming, outgoing, dialer, work)

    async def run(self) -> None:
        """Open, init and serve the modem; reopen it with backoff whenever it goes.

        Cancelling this ends the agent whatever the link is doing. The work runs
        in an inner task: a cancellation that meets a link failure inside a
        task group can be turned into that failure (the group reports errors
        before cancellation), so the stop is also said with a flag the inner
        loop checks, and the inner task is cancelled until it ends."""
        self._stopping = False
        inner = asyncio.create_task(self._supervise())
        try:
            await asyncio.wait([inner])
        except asyncio.CancelledError:
            self._stopping = True
            while not inner.done():
                inner.cancel()
                await asyncio.wait([inner], timeout=0.5)
            raise
        inner.result()

    async def _supervise(self) -> None:
        delay = 0.5
        failures = 0
        while True:
            journal = ModemJournal(self.journal_path)
            parts = self._parts = self._assemble(journal)
            self._reinit_queued = False
            was_online = False
            try:
                await parts.link.open()
                self._set_state("starting", "initialising")
                await parts.session.init()
                self.model = parts.session.model
                await self.health.poll(parts.session)
                was_online = True
                await self._serve(parts, journal)
            except Parked as exc:
                self._set_state("parked", str(exc))
                self.log.error("modem parked: %s. Fix the configuration and restart the agent; "
                               "it will not try again on its own.", exc)
                await parts.link.close()
                await asyncio.Event().wait()  # parked until cancelled
            except LinkError as exc:
                if self._stopping:
                    raise asyncio.CancelledError from exc
                failures = 1 if was_online else failures + 1
                self._set_state("offline", str(exc))
                level = logging.WARNING if failures == 1 else logging.DEBUG
                self.log.log(level, "modem offline (%s): %s; reopening %s with backoff",
                             type(exc).__name__, exc, self.settings.port)
            finally:
                self._parts = None
                await parts.link.close()
                await self._tasks.aclose()
                journal.close()
            if was_online:
                delay = 0.5
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.settings.reopen_backoff_max)

    async def _serve(self, parts: _Online, journal: ModemJournal) -> None:
        runtime = AgentRuntime(url=self.url, device_id=self.device_id, token=self.token, backend=self,
                               journal=journal, agent_name=AGENT_NAME, window=self.window, workers=1,
                               status_interval=self.status_interval, ssl=self.ssl, timezone="UTC")
        self.runtime = runtime
        parts.incoming.forget_unsent_records()
        self._set_state("online")
        self.log.info("modem %s on %s is online", self.model or "?", self.settings.port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(parts.link))
                tg.create_task(self._worker(parts))
                tg.create_task(self._health_loop(parts.session))
                tg.create_task(self._poll_loop(parts))
                tg.create_task(self._timer_loop(parts))
                tg.create_task(runtime.run())
                parts.work.put_nowait(("scan",))
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            self.runtime = None
            await runtime.aclose()

    async def _watch(self, link: SerialLink) -> None:
        assert link.lost is not None
        raise await link.lost

    # ------------------------------------------------------------------
    # unsolicited result codes (called on the loop, from the link's reader)

    def _on_urc(self, urc: Urc) -> None:
        parts = self._parts
        if parts is None:
            return
        name = urc.name
        if name in ("+CMTI", "+CDSI"):
            if len(urc.args) >= 2 and urc.args[1].isdigit():
                mem = urc.args[0].upper() or "SM"
                parts.work.put_nowait(("read", mem, int(urc.args[1]), name == "+CDSI"))
        elif name in ("+CMT", "+CDS") and urc.pdu:
            length = urc.args[-1] if name == "+CMT" and urc.args else (urc.args[0] if urc.args else "")
            # Reported (journalled) before anything else happens, then acknowledged.
            parts.incoming.on_urc_record(urc.pdu, int(length) if length.isdigit() else None)
            if parts.session.routing.acks:
                self._tasks.spawn(self._acknowledge(parts))
        elif name in CALL_URCS:
            parts.dialer.on_urc(urc, time.time())
            self._timer_wake.set()
        elif name in ("+CREG", "+CEREG", "+CGREG"):
            self.health.registration(urc.args)
        elif name in READY_URCS and self.state == "online":
            started = {"+CPIN": urc.args[:1] == ("READY",), "+QIND": urc.args[:1] == ("SMS DONE",)}.get(name, True)
            if started and not self._reinit_queued:
                self._reinit_queued = True
                parts.work.put_nowait(("reinit",))
        else:
            self.log.debug("URC %s ignored", name)

    async def _acknowledge(self, parts: _Online) -> None:
        """+CSMS=1: AT+CNMA for a +CMT/+CDS, else the modem stops routing them (TS 27.005 §3.4.4)."""
        try:
            await parts.session.cmd("AT+CNMA")
        except CommandError as exc:
            self.log.warning("AT+CNMA refused (%s); the routing check will set it again", exc)
        except LinkError:
            pass  # going offline: the modem will route nothing unacknowledged until set again

    # ------------------------------------------------------------------
    # the worker: storage reads and deletes, one at a time, off the URC path

    async def _worker(self, parts: _Online) -> None:
        while True:
            item = await parts.work.get()
            try:
                await self._do(parts, item)
            except CommandError as exc:
                self.log.warning("%s failed: %s", item[0], exc)
            except CommandTimeout:  # the session ran the reset; a scan finds what this missed
                parts.work.put_nowait(("scan",))
            except OSError as exc:
                # The journal refused a write (disk full, read-only): nothing it would have
                # recorded was done (a record is deleted only once its event is journalled
                # and acked). Done again once the journal takes writes.
                runtime = self.runtime
                self.log.warning("%s not done: the journal takes no writes (%s); tried again when it does",
                                 item[0], exc.strerror or exc)
                if runtime is None:
                    continue
                runtime.journal_refused(exc)
                await runtime.journal_writable()
                parts.work.put_nowait(item)

    async def _do(self, parts: _Online, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "scan":
            await parts.incoming.scan()
        elif kind == "read":
            await parts.incoming.read(item[1], item[2], report=item[3])
        elif kind == "poll":
            if not await parts.session.routing_intact():
                self.log.warning("the modem's AT+CNMI changed under us: setting it again")
                await parts.session.set_routing()
            await parts.incoming.scan()
        elif kind == "delete":
            await parts.incoming.delete(item[1])
        elif kind == "delete-index":
            await parts.incoming.delete_index(item[1], item[2])
        elif kind == "reinit":
            self._reinit_queued = False
            self.log.info("modem restarted: configuring it again")
            await parts.session.configure()
            await parts.incoming.scan()

    # ------------------------------------------------------------------
    # timers: ringing that stopped, multipart messages that never completed

    async def _timer_loop(self, parts: _Online) -> None:
        while True:
            deadlines = [d for d in (parts.dialer.deadline(), parts.incoming.inbox.next_deadline(),
                                     parts.incoming.held_deadline()) if d is not None]
            self._timer_wake.clear()
            wait = max(0.0, min(deadlines) - time.time()) + 0.01 if deadlines else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._timer_wake.wait()
            now = time.time()
            parts.dialer.tick(now)
            parts.incoming.expired(now)

    # ------------------------------------------------------------------
    # health

    async def _health_loop(self, session: ModemSession) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            with contextlib.suppress(CommandTimeout):  # the reset ran; next round
                await self.health.poll(session)

    async def _poll_loop(self, parts: _Online) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            parts.work.put_nowait(("poll",))

    def status(self) -> protocol.Status | None:
        return self.health.status()

    # ------------------------------------------------------------------
    # the Backend: jobs

    async def execute(self, job: protocol.Job, report: Reporter) -> None:
        parts = self._parts
        if parts is None:
            await _until_cancelled()  # torn down: recover() settles it
            return
        try:
            if isinstance(job, protocol.Dial):
                await parts.dialer.dial(job, report)
            else:
                await parts.outgoing.send(job, report)
        except LinkLost:
            # The modem went away mid-job: the agent is being taken offline and
            # this task cancelled. The job stays "sending"; recover() finishes it.
            await _until_cancelled()

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        """A job left ``sending`` by a crash or an unplug, now that the modem is back."""
        parts = self._parts
        assert parts is not None
        if isinstance(job, protocol.Dial):
            return parts.dialer.recover(job)
        return await parts.outgoing.recover(job)

    def resume_sent(self, job: protocol.Job, report: Reporter) -> None:
        """Sent jobs awaiting status reports need nothing: their references
        are in the durable memory."""


async def _until_cancelled() -> None:
    await asyncio.get_running_loop().create_future()


# --------------------------------------------------------------------------
# standalone


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m device_agents.modem.agent",
                                description="Run a GSM modem agent against a (remote) simbridge bridge.")
    p.add_argument("--url", required=True, help="the bridge's agent listener, e.g. ws://bridge:8765")
    p.add_argument("--device", required=True, help="device id, as in the bridge's config")
    p.add_argument("--token", required=True, help="the device's token (token = … in the bridge's config)")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/serial/by-id/usb-…")
    p.add_argument("--pin", help="SIM PIN (entered only if the SIM asks for it)")
    p.add_argument("--journal", required=True, help="the agent's journal: its one state file")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--smsc", help="SMS centre number, if the SIM's is wrong")
    p.add_argument("--hangup-after", type=float, help="seconds before a click-to-call is hung up")
    p.add_argument("--command-timeout", type=float, default=10.0)
    p.add_argument("--multipart-timeout", type=float, default=600.0)
    p.add_argument("--send-timeout", type=float, default=180.0,
                   help="seconds AT+CMGS may take; a part unanswered by then is never sent again")
    p.add_argument("--poll-interval", type=float, default=45.0,
                   help="seconds between storage polls and AT+CNMI? checks")
    p.add_argument("--no-delivery-reports", action="store_true")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


async def _main(args: argparse.Namespace) -> int:
    settings = ModemSettings(port=args.port, pin=args.pin, baudrate=args.baudrate, smsc=args.smsc,
                             hangup_after=args.hangup_after, command_timeout=args.command_timeout,
                             multipart_timeout=args.multipart_timeout, send_timeout=args.send_timeout,
                             poll_interval=args.poll_interval, delivery_reports=not args.no_delivery_reports)
    agent = ModemAgent(device_id=args.device, url=args.url, token=args.token, journal_path=args.journal,
                       settings=settings, window=args.window)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(agent.run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # What start-up built (modules, tables) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it (see simbridge run).
    gc.collect()
    gc.freeze()
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
