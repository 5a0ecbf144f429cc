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
the journal and is reconciled when the modem is back (:meth:`ModemAgent.recover`):
the parts the modem confirmed are never sent again, the others are.

Serial I/O runs in threads (:mod:`.serial_link`); one AT command at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import protocol
from ..journal import Journal
from ..runtime import AgentRuntime, Reporter
from ..tasks import TaskSet
from . import pdu
from .at import ResultKind, Urc, parse_args
from .calls import CallState, CallTracker, FinishedCall
from .inbox import Message, Reassembler
from .serial_link import CommandError, CommandTimeout, LinkError, LinkLost, Reply, SerialLink
from .state import ModemState, pin_hash, ref_key

log = logging.getLogger(__name__)

AGENT_NAME = "simbridge-modem/1"
UNMATCHED_REPORT_S = 120.0  # a status report may beat the +CMGS reply it answers
# Errors after which nothing was transmitted and another try later (or another
# device) may well succeed: the job is handed back (rejected), not failed.
TRANSIENT_CMS = frozenset({314, 331, 332, 500})
TRANSIENT_CME = frozenset({14, 30, 31, 515})
REG_STATES = {"0": "not registered", "1": "registered", "2": "searching", "3": "denied",
              "4": "unknown", "5": "roaming", "6": "registered", "7": "roaming"}
ACCESS_TECH = {"0": "GSM", "1": "GSM", "2": "UMTS", "3": "EDGE", "4": "HSDPA", "5": "HSUPA", "6": "HSPA",
               "7": "LTE", "8": "EC-GSM", "9": "NB-IoT", "10": "LTE", "11": "NR", "12": "NR", "13": "NR"}


def mask(number: str) -> str:
    """``+33612345678`` → ``+336****5678`` (numbers stay out of INFO logs)."""
    return number if len(number) < 8 else f"{number[:4]}****{number[-4:]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemSettings:
    port: str
    pin: str | None = None
    baudrate: int = 115200
    smsc: str | None = None
    hangup_after: float | None = None  # None: the dial job's own hangup_after_s
    command_timeout: float = 10.0
    send_timeout: float = 60.0  # AT+CMGS waits for the network
    multipart_timeout: float = 600.0
    delivery_reports: bool = True
    health_interval: float = 30.0
    ring_gap: float = 8.0  # no RING for this long: the caller gave up
    reopen_backoff_max: float = 30.0
    probe_tries: int = 5

    @classmethod
    def from_options(cls, options: dict[str, Any], **overrides: Any) -> ModemSettings:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in options.items() if k in names}
        values.update(overrides)
        return cls(**values)


class Parked(Exception):
    """The modem must not be retried (a SIM PIN problem): a person has to act."""


class NotReady(LinkError):
    """The modem answers but cannot work yet (no SIM…): retried with backoff."""


class _SendFailed(Exception):
    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class AckJournal(Journal):
    """A :class:`Journal` that tells the agent which events the bridge acked
    (the modem deletes an SMS from the SIM only then)."""

    def __init__(self, path: str | os.PathLike[str], *, on_ack: Callable[[list[str]], None] | None = None,
                 **kw: Any) -> None:
        super().__init__(path, **kw)
        self.on_ack = on_ack

    def ack(self, event_ids: Iterable[str]) -> None:
        ids = list(event_ids)
        super().ack(ids)
        if self.on_ack is not None:
            self.on_ack(ids)


def journal_path_for(data_dir: str | os.PathLike[str], device_id: str) -> Path:
    """Where the daemon keeps an in-daemon modem agent's journal."""
    return Path(data_dir) / f"modem-{device_id}-journal.jsonl"


def state_path_for(journal_path: str | os.PathLike[str]) -> Path:
    return Path(journal_path).with_suffix(".state.json")


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


class ModemAgent:
    """One modem: its link, its runtime while online, and the runtime's Backend."""

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
        self.store = ModemState(state_path_for(self.journal_path))
        self.log = logging.LoggerAdapter(log, {"device": device_id})
        self.state = "starting"  # starting | online | offline | parked
        self.reason = ""
        self.online = asyncio.Event()
        self.link: SerialLink | None = None
        self.runtime: AgentRuntime | None = None
        self.model = ""
        self._health: dict[str, Any] = {}
        self._reset_session()

    def _reset_session(self) -> None:
        self.calls = CallTracker(ring_gap=self.settings.ring_gap)
        self.inbox = Reassembler(timeout=self.settings.multipart_timeout)
        self._work: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._pending_delete: dict[str, set[tuple[str, int]]] = {}
        self._unmatched: list[tuple[float, pdu.StatusReport]] = []
        self._timer_wake = asyncio.Event()
        self._call_lock = asyncio.Lock()
        self._call_over = asyncio.Event()
        self._reset_lock = asyncio.Lock()
        self._bad_records: set[str] = set()
        self._reinit_queued = False
        self._tasks = TaskSet()

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

    async def run(self) -> None:
        """Open, init and serve the modem; reopen it with backoff whenever it goes."""
        delay = 0.5
        failures = 0
        while True:
            self._reset_session()
            link = self.link_factory(self.settings.port, baudrate=self.settings.baudrate, on_urc=self._on_urc,
                                     command_timeout=self.settings.command_timeout, logger=self.log)
            self.link = link
            was_online = False
            try:
                await link.open()
                await self._init()
                was_online = True
                await self._serve(link)
            except Parked as exc:
                self._set_state("parked", str(exc))
                self.log.error("modem parked: %s. Fix the configuration and restart the agent; "
                               "it will not try again on its own.", exc)
                await link.close()
                await asyncio.Event().wait()  # parked until cancelled
            except LinkError as exc:
                failures = 1 if was_online else failures + 1
                self._set_state("offline", str(exc))
                level = logging.WARNING if failures == 1 else logging.DEBUG
                self.log.log(level, "modem offline (%s): %s; reopening %s with backoff",
                             type(exc).__name__, exc, self.settings.port)
            finally:
                self.link = None
                await link.close()
                await self._cancel_tasks()
            if was_online:
                delay = 0.5
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.settings.reopen_backoff_max)

    async def _serve(self, link: SerialLink) -> None:
        journal = AckJournal(self.journal_path, on_ack=self._on_ack)
        runtime = AgentRuntime(url=self.url, device_id=self.device_id, token=self.token, backend=self,
                               journal=journal, agent_name=AGENT_NAME, window=self.window, workers=1,
                               status_interval=self.status_interval, ssl=self.ssl, timezone="UTC")
        self.runtime = runtime
        self._forget_unsent_records(journal)
        self._set_state("online")
        self.log.info("modem %s on %s is online", self.model or "?", self.settings.port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(link))
                tg.create_task(self._worker())
                tg.create_task(self._health_loop())
                tg.create_task(self._timer_loop())
                tg.create_task(runtime.run())
                self._work.put_nowait(("scan",))
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            self.runtime = None
            await runtime.aclose()

    async def _watch(self, link: SerialLink) -> None:
        assert link.lost is not None
        raise await link.lost

    async def _cancel_tasks(self) -> None:
        await self._tasks.aclose()

    # ------------------------------------------------------------------
    # commands

    async def _cmd(self, command: str, **kw: Any) -> Reply:
        """One command; a timeout runs the reset sequence before it is raised."""
        link = self.link
        if link is None:
            raise LinkLost("no modem")
        try:
            return await link.command(command, **kw)
        except CommandTimeout as exc:
            await self._reset(str(exc))
            raise

    async def _try(self, command: str, **kw: Any) -> Reply | None:
        """A command whose error is not fatal: None when the modem refuses it."""
        try:
            return await self._cmd(command, **kw)
        except CommandError as exc:
            self.log.debug("modem refused %s: %s", command, exc.final.text)
            return None

    async def _probe(self, tries: int) -> None:
        link = self.link
        assert link is not None
        last: Exception | None = None
        for _ in range(tries):
            try:
                await link.command("AT", timeout=min(2.0, self.settings.command_timeout), retry_busy=False)
                return
            except CommandError:
                return  # it answers: good enough
            except CommandTimeout as exc:
                last = exc
                with contextlib.suppress(LinkError):
                    await link.write_raw(b"\x1b\r")
        raise LinkLost(f"no answer to AT ({last})")

    async def _reset(self, why: str) -> None:
        """The reset sequence after a command timed out: abort any PDU entry,
        probe, and configure the modem again (it may have rebooted). A modem
        that stays silent is treated as gone: the port is closed and reopened."""
        link = self.link
        if link is None or self._reset_lock.locked():
            return
        async with self._reset_lock:
            self.log.warning("modem did not answer (%s): resetting", why)
            try:
                await link.write_raw(b"\x1b\r")
                await self._probe(3)
                await self._configure()
            except LinkError as exc:
                err = LinkLost(f"modem silent after a reset: {exc}")
                link.fail(err)
                raise err from exc

    # ------------------------------------------------------------------
    # init

    async def _init(self) -> None:
        self._set_state("starting", "initialising")
        with contextlib.suppress(LinkError):
            await self.link.write_raw(b"\x1b\r")  # abort a PDU entry a previous run left open
        await self._probe(self.settings.probe_tries)
        await self._configure()
        await self._poll_health()

    async def _configure(self) -> None:
        await self._cmd("ATE0")
        await self._cmd("AT+CMEE=1")
        await self._unlock()
        if not self.model:
            reply = await self._try("AT+CGMM")
            self.model = reply.lines[0] if reply and reply.lines else ""
        await self._cmd("AT+CMGF=0")
        if await self._try('AT+CPMS="SM","SM","SM"') is None:
            self.log.warning("modem refused SIM storage (AT+CPMS); using its default")
        for cnmi in ("AT+CNMI=2,1,0,1,0", "AT+CNMI=2,1,0,2,0", "AT+CNMI=1,1,0,1,0"):
            if await self._try(cnmi) is not None:
                break
        else:
            self.log.warning("modem refused every AT+CNMI: incoming SMS are found by polling only")
        if await self._try("AT+CLIP=1") is None:
            self.log.warning("modem refused AT+CLIP=1: callers' numbers unknown")
        await self._try("AT+COPS=3,0")
        if self.settings.smsc:
            toa = 145 if self.settings.smsc.startswith("+") else 129
            await self._cmd(f'AT+CSCA="{self.settings.smsc}",{toa}')

    async def _unlock(self) -> None:
        pin = self.settings.pin
        for _ in range(20):
            try:
                reply = await self._cmd("AT+CPIN?")
            except CommandError as exc:
                if exc.is_cme(10, 13, 15):
                    raise NotReady(f"SIM not usable: {exc.final.text}") from None
                raise
            lines = reply.info("+CPIN:")
            code = lines[0].split(":", 1)[1].strip().strip('"').upper() if lines else "READY"
            if code == "READY":
                return
            if code != "SIM PIN":
                raise Parked(f"the SIM needs {code}; simbridge only enters a PIN (pin in the config)")
            if not pin:
                raise Parked("the SIM asks for its PIN and no pin is configured for this modem")
            if self.store.bad_pin == pin_hash(pin):
                raise Parked("the configured PIN was refused by this SIM before; not trying it again "
                             "(each try uses up one of the SIM's few attempts)")
            try:
                await self._cmd(f'AT+CPIN="{pin}"', retry_busy=False)
            except CommandError as exc:
                self.store.bad_pin = pin_hash(pin)
                self.store.save()
                raise Parked(f"the SIM refused the configured PIN ({exc.final.text}); "
                             "not trying again") from None
            self.log.info("SIM unlocked")
            await asyncio.sleep(0.1)  # the SIM initialises; AT+CPIN? says when it is ready
        raise NotReady("the SIM never became ready")

    # ------------------------------------------------------------------
    # unsolicited result codes (called on the loop, from the link's reader)

    def _on_urc(self, urc: Urc) -> None:
        name = urc.name
        now = time.time()
        if name in ("+CMTI", "+CDSI"):
            if len(urc.args) >= 2 and urc.args[1].isdigit():
                self._work.put_nowait(("read", int(urc.args[1])))
        elif name == "+CMT" and urc.pdu:
            length = urc.args[-1] if urc.args else ""
            self._on_record(None, urc.pdu, int(length) if length.isdigit() else None)
        elif name == "+CDS" and urc.pdu:
            self._on_record(None, urc.pdu, int(urc.args[0]) if urc.args and urc.args[0].isdigit() else None)
        elif name in ("RING", "+CRING"):
            self.calls.ring(now)
            self._timer_wake.set()
        elif name == "+CLIP":
            self.calls.clip(urc.args[0] if urc.args else "", now)
            self._timer_wake.set()
        elif name in ("NO CARRIER", "BUSY", "NO ANSWER"):
            self._call_finished(self.calls.ended(now))
        elif name in ("+CREG", "+CEREG", "+CGREG"):
            stat = urc.args[0] if len(urc.args) == 1 else (urc.args[1] if len(urc.args) > 1 else "")
            if stat in REG_STATES:
                self._health["network"] = REG_STATES[stat]
        elif name in ("RDY", "+CPIN", "SMS READY") and self.state == "online":
            if (name != "+CPIN" or urc.args[:1] == ("READY",)) and not self._reinit_queued:
                self._reinit_queued = True
                self._work.put_nowait(("reinit",))
        else:
            self.log.debug("URC %s ignored", name)

    # ------------------------------------------------------------------
    # the worker: storage reads and deletes, one at a time, off the URC path

    async def _worker(self) -> None:
        while True:
            item = await self._work.get()
            try:
                await self._do(item)
            except CommandError as exc:
                self.log.warning("%s failed: %s", item[0], exc)
            except CommandTimeout:  # _cmd ran the reset; a scan finds what this missed
                self._work.put_nowait(("scan",))

    async def _do(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "scan":
            await self._scan()
        elif kind == "read":
            reply = await self._cmd(f"AT+CMGR={item[1]}")
            for index, hex_pdu, length in _records(reply, "+CMGR:", index=item[1]):
                self._on_record(index, hex_pdu, length)
        elif kind == "delete":
            await self._delete(item[1])
        elif kind == "delete-index":
            await self._cmd(f"AT+CMGD={item[1]}")
        elif kind == "reinit":
            self._reinit_queued = False
            self.log.info("modem restarted: configuring it again")
            await self._configure()
            await self._scan()

    async def _scan(self) -> None:
        reply = await self._cmd("AT+CMGL=4")
        seen = set()
        for index, hex_pdu, length in _records(reply, "+CMGL:"):
            seen.add(_record_key(index, hex_pdu))
            self._on_record(index, hex_pdu, length)
        # records reported and acked, deleted since, but not struck off: forget them
        outbox = self.runtime.journal.outbox if self.runtime else {}
        stale = [k for k, e in self.store.incoming.items() if k not in seen and e not in outbox]
        if stale:
            for key in stale:
                del self.store.incoming[key]
            self.store.save()

    def _forget_unsent_records(self, journal: Journal) -> None:
        """A record noted as reported under an event id the journal never
        stored (a crash between the two) was never reported: forget it so
        that the next scan reports it."""
        dropped = [k for k, e in self.store.incoming.items()
                   if e not in journal.outbox and _event_number(e) > journal.seq]
        for key in dropped:
            del self.store.incoming[key]
        if dropped:
            self.store.save()

    def _on_record(self, index: int | None, hex_pdu: str, length: int | None) -> None:
        """One SMS record, from storage (index) or a +CMT/+CDS (no index)."""
        key = _record_key(index, hex_pdu) if index is not None else None
        if key is not None:
            if key in self.store.incoming:
                self._known_record(key, index)
                return
            if self.inbox.holds(key) or key in self._bad_records:
                return
        try:
            message = pdu.decode(hex_pdu, tpdu_length=length)
        except pdu.PduError:
            try:
                message = pdu.decode(hex_pdu)
            except pdu.PduError as exc:
                if key is not None:
                    self._bad_records.add(key)
                self.log.warning("cannot decode the SMS record %s (%s); left on the SIM", index, exc)
                return
        if isinstance(message, pdu.StatusReport):
            self._status_report(message)
            if index is not None:
                self._work.put_nowait(("delete-index", index))
        elif isinstance(message, pdu.Deliver):
            whole = self.inbox.add(key, index, message, time.time())
            if whole is not None:
                self._report_incoming(whole)
            else:
                self._timer_wake.set()

    def _known_record(self, key: str, index: int) -> None:
        event_id = self.store.incoming[key]
        self._pending_delete.setdefault(event_id, set()).add((key, index))
        journal = self.runtime.journal if self.runtime else None
        if journal is None or event_id not in journal.outbox:
            self._work.put_nowait(("delete", event_id))  # acked already: delete it now

    def _report_incoming(self, message: Message) -> None:
        runtime = self.runtime
        if runtime is None:
            return  # offline: the parts stay on the SIM and are read again
        event_id = runtime.new_event_id()
        # The record→event map is saved *before* the event: were the agent to die
        # in between, the event id is above the journal's sequence and the next
        # start knows the SMS was never reported (see _forget_unsent_records).
        for key, _ in message.records:
            self.store.incoming[key] = event_id
        if message.records:
            self.store.save()
            self._pending_delete[event_id] = set(message.records)
        runtime.emit([protocol.SmsReceived(event_id=event_id, sender=message.sender[:32],
                                           text=message.text[:protocol.MAX_TEXT], at=message.at,
                                           incomplete=message.incomplete)])
        self.log.info("SMS received from %s%s", mask(message.sender),
                      " (incomplete)" if message.incomplete else "")

    def _on_ack(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            if event_id in self._pending_delete:
                self._work.put_nowait(("delete", event_id))

    async def _delete(self, event_id: str) -> None:
        records = self._pending_delete.pop(event_id, set())
        for key, index in sorted(records, key=lambda r: r[1]):
            await self._cmd(f"AT+CMGD={index}")
            self.store.incoming.pop(key, None)
        if records:
            self.store.save()

    # ------------------------------------------------------------------
    # status reports

    def _status_report(self, report: pdu.StatusReport) -> None:
        if report.status == "pending":
            return  # the SMSC is still trying: a final report follows
        key = ref_key(report.reference, report.recipient)
        hit = self.store.refs.pop(key, None)
        if hit is None:
            now = time.monotonic()
            self._unmatched = [(t, r) for t, r in self._unmatched if now - t < UNMATCHED_REPORT_S]
            self._unmatched.append((now, report))
            self.log.debug("status report for unknown reference %d", report.reference)
            return
        job_id, seq = hit
        send = self.store.sends.get(job_id)
        if send is not None:
            send.setdefault("outcome", {})[str(seq)] = [report.status, report.status_code]
            self._settle(job_id)
        self.store.save()

    def _settle(self, job_id: str) -> None:
        """Report delivered / failed once every part has its outcome (and the
        job was reported sent)."""
        send = self.store.sends.get(job_id)
        runtime = self.runtime
        if send is None or not send.get("sent") or runtime is None:
            return
        outcome = send.get("outcome", {})
        failed = sorted((int(s), code) for s, (status, code) in outcome.items() if status == "failed")
        if failed:
            seq, code = failed[0]
            part = f"part {seq}/{send['total']} " if send["total"] > 1 else ""
            runtime.report(job_id, protocol.JOB_FAILED,
                           reason=f"status report: {part}not delivered (TP-ST 0x{code:02X})")
        elif len(outcome) >= send["total"]:
            runtime.report(job_id, protocol.JOB_DELIVERED)
        else:
            return
        self.store.forget_send(job_id)

    def _match_early_reports(self, key: str) -> None:
        for item in list(self._unmatched):
            if ref_key(item[1].reference, item[1].recipient) == key:
                self._unmatched.remove(item)
                self._status_report(item[1])

    # ------------------------------------------------------------------
    # calls

    def _call_finished(self, call: FinishedCall | None) -> None:
        if call is None:
            return
        if call.direction == "outgoing":
            self._call_over.set()
        runtime = self.runtime
        if runtime is None:
            return
        runtime.emit([protocol.CallEvent(event_id=runtime.new_event_id(), direction=call.direction,
                                         number=call.number[:32], at=call.at, duration_s=call.duration_s,
                                         job_id=call.job_id)])
        self.log.info("call %s %s (%.0f s)", call.direction, mask(call.number), call.duration_s)

    async def _dial(self, job: protocol.Dial, report: Reporter) -> None:
        await self._call_lock.acquire()
        handed_over = False
        try:
            if not self.calls.dial(job.to, job.job_id, time.time()):
                report(job.job_id, protocol.JOB_REJECTED, reason="the modem is busy with another call")
                return
            self.store.sends[job.job_id] = {"dial": True, "at": time.time()}
            self.store.save()
            self._call_over.clear()
            try:
                await self._cmd(f"ATD{job.to};", timeout=max(self.settings.command_timeout, 30.0))
            except CommandError as exc:
                self.calls.hangup(time.time())
                self.store.forget_send(job.job_id)
                self.store.save()
                report(job.job_id, protocol.JOB_FAILED, reason=f"call not placed: {exc.final.text}")
                return
            report(job.job_id, protocol.JOB_SENT)
            self.log.info("job %s: calling %s", job.job_id, mask(job.to))
            hangup_after = self.settings.hangup_after or job.hangup_after_s
            self._tasks.spawn(self._hang_up_later(job, hangup_after))
            handed_over = True
        finally:
            if not handed_over:
                self._call_lock.release()

    async def _hang_up_later(self, job: protocol.Dial, after: float) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(after):
                    await self._call_over.wait()
            if self.calls.state is CallState.OUTGOING:
                with contextlib.suppress(CommandError):
                    await self._cmd("ATH")
                self._call_finished(self.calls.hangup(time.time()))
            self.store.forget_send(job.job_id)
            self.store.save()
        finally:
            self._call_lock.release()

    # ------------------------------------------------------------------
    # timers: ringing that stopped, multipart messages that never completed

    async def _timer_loop(self) -> None:
        while True:
            deadlines = [d for d in (self.calls.deadline(), self.inbox.next_deadline()) if d is not None]
            self._timer_wake.clear()
            wait = max(0.0, min(deadlines) - time.time()) + 0.01 if deadlines else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._timer_wake.wait()
            now = time.time()
            self._call_finished(self.calls.tick(now))
            for message in self.inbox.expired(now):
                self._report_incoming(message)

    # ------------------------------------------------------------------
    # health

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            try:
                await self._poll_health()
            except CommandTimeout:
                pass  # the reset ran; next round

    async def _poll_health(self) -> None:
        reply = await self._try("AT+CSQ")
        if reply and reply.info("+CSQ:"):
            args = parse_args(reply.info("+CSQ:")[0])
            rssi = int(args[0]) if args and args[0].isdigit() else 99
            self._health["signal"] = None if rssi == 99 or rssi > 31 else round(rssi * 100 / 31)
        network = None
        for command, prefix in (("AT+CREG?", "+CREG:"), ("AT+CEREG?", "+CEREG:")):
            reply = await self._try(command)
            if reply and reply.info(prefix):
                args = parse_args(reply.info(prefix)[0])
                stat = REG_STATES.get(args[1] if len(args) > 1 else "")
                if stat and (network is None or stat in ("registered", "roaming")):
                    network = stat
                if network in ("registered", "roaming"):
                    break
        if network:
            self._health["network"] = network
        reply = await self._try("AT+COPS?")
        if reply and reply.info("+COPS:"):
            args = parse_args(reply.info("+COPS:")[0])
            self._health["operator"] = args[2][:64] if len(args) > 2 and args[2] else None
            self._health["technology"] = ACCESS_TECH.get(args[3]) if len(args) > 3 else None

    def status(self) -> protocol.Status | None:
        h = self._health
        return protocol.Status(at=time.time(), signal=h.get("signal"), network=h.get("network"),
                               operator=h.get("operator"), technology=h.get("technology"), timezone="UTC")

    # ------------------------------------------------------------------
    # the Backend: jobs

    async def execute(self, job: protocol.Job, report: Reporter) -> None:
        if isinstance(job, protocol.Dial):
            try:
                await self._dial(job, report)
            except LinkLost:
                await _until_cancelled()  # torn down: recover() settles it
            return
        try:
            mrs = await self._transmit(job)
        except _SendFailed as exc:
            self.store.forget_send(job.job_id)
            self.store.save()
            state = protocol.JOB_REJECTED if exc.transient else protocol.JOB_FAILED
            self.log.info("job %s: %s: %s", job.job_id, state, exc.reason)
            report(job.job_id, state, reason=exc.reason)
            return
        except LinkLost:
            # The modem went away mid-job: the agent is being taken offline and
            # this task cancelled. The job stays "sending"; recover() finishes it.
            await _until_cancelled()
        self._sent(job, mrs, report)

    def _sent(self, job: protocol.SendSms, mrs: list[int], report: Reporter) -> None:
        report(job.job_id, protocol.JOB_SENT, parts=len(mrs), network_ref=",".join(map(str, mrs))[:128])
        self.log.info("job %s: sent to %s in %d part(s)", job.job_id, mask(job.to), len(mrs))
        send = self.store.sends.get(job.job_id)
        if send is None:
            return
        if send.get("report"):
            send["sent"] = True
            self._settle(job.job_id)
        else:
            self.store.forget_send(job.job_id)
        self.store.save()

    async def _transmit(self, job: protocol.SendSms) -> list[int]:
        """Send every part the modem has not confirmed yet; the TP-MR of each."""
        store = self.store
        send = store.sends.get(job.job_id)
        if send is None:
            send = {"to": job.to, "ref": store.next_concat_ref(), "mrs": {}, "attempt": None,
                    "report": bool(job.report and self.settings.delivery_reports), "at": time.time()}
        try:
            parts = pdu.encode_submit(job.to, job.text, smsc=self.settings.smsc, request_report=send["report"],
                                      concat_ref=send["ref"])
        except ValueError as exc:
            raise _SendFailed(f"cannot encode the message: {exc}") from None
        send["total"] = len(parts)
        store.sends[job.job_id] = send
        for part in parts:
            if str(part.seq) in send["mrs"]:
                continue
            send["attempt"] = part.seq
            store.save()  # before the radio is touched: the part's fate is uncertain from here
            timeouts = 0
            while True:
                try:
                    reply = await self._cmd(f"AT+CMGS={part.tpdu_length}", pdu=part.hex,
                                            timeout=self.settings.send_timeout)
                    break
                except CommandTimeout as exc:
                    timeouts += 1
                    if timeouts >= 2:
                        raise _SendFailed(f"the modem did not confirm part {part.seq}/{part.total}",
                                          transient=part.seq == 1 and not exc.uncertain) from None
                    self.log.warning("job %s: part %d/%d unconfirmed; sending it again",
                                     job.job_id, part.seq, part.total)
                except CommandError as exc:
                    code = exc.final.code
                    transient = part.seq == 1 and (
                        (exc.final.kind is ResultKind.CMS and code in TRANSIENT_CMS)
                        or (exc.final.kind is ResultKind.CME and code in TRANSIENT_CME))
                    sent = f" ({part.seq - 1} part(s) sent)" if part.seq > 1 else ""
                    raise _SendFailed(f"modem refused part {part.seq}/{part.total}: {exc.final.text}{sent}",
                                      transient=transient) from None
            lines = reply.info("+CMGS:")
            args = parse_args(lines[0]) if lines else ()
            mr = int(args[0]) if args and args[0].isdigit() else -1
            if mr < 0:  # OK without +CMGS: sent, but no status report can be matched to it
                self.log.warning("job %s: no message reference for part %d", job.job_id, part.seq)
            send["mrs"][str(part.seq)] = mr
            send["attempt"] = None
            if send["report"] and mr >= 0:  # without a reference the job stays "sent"
                store.refs[ref_key(mr, job.to)] = [job.job_id, part.seq]
            store.save()
            if send["report"] and mr >= 0:
                self._match_early_reports(ref_key(mr, job.to))
        return [send["mrs"][str(s)] for s in range(1, len(parts) + 1)]

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        """A job left ``sending`` by a crash or an unplug, now that the modem is back."""
        send = self.store.sends.get(job.job_id)
        if isinstance(job, protocol.Dial):
            if send is not None:
                self.store.forget_send(job.job_id)
                self.store.save()
                return protocol.JOB_SENT, "the call was placed before the modem went away"
            return protocol.JOB_REJECTED, "not dialled before the modem went away"
        if send is None or (not send.get("mrs") and send.get("attempt") is None):
            return protocol.JOB_REJECTED, "not transmitted before the modem went away"
        if send.get("sent") or len(send.get("mrs", {})) >= send.get("total", 1) and send.get("attempt") is None:
            if not send.get("report"):
                self.store.forget_send(job.job_id)
            else:
                send["sent"] = True
                self._tasks.spawn(self._settle_soon(job.job_id))
            self.store.save()
            return protocol.JOB_SENT, "transmitted before the modem went away"
        # Some parts confirmed, one maybe: send the rest now. A part whose
        # +CMGS never came is sent again (at-least-once: handsets drop a
        # repeated part of a concatenated SMS).
        try:
            mrs = await self._transmit(job)
        except _SendFailed as exc:
            self.store.forget_send(job.job_id)
            self.store.save()
            return protocol.JOB_FAILED, exc.reason
        send = self.store.sends.get(job.job_id)
        if send is not None:
            if send.get("report"):
                send["sent"] = True
                self._tasks.spawn(self._settle_soon(job.job_id))
            else:
                self.store.forget_send(job.job_id)
            self.store.save()
        return protocol.JOB_SENT, f"completed after the modem came back ({len(mrs)} part(s))"

    async def _settle_soon(self, job_id: str) -> None:
        await asyncio.sleep(0)  # after the runtime recorded "sent"
        self._settle(job_id)

    def resume_sent(self, job: protocol.Job, report: Reporter) -> None:
        """Sent jobs awaiting status reports need nothing: their references
        are in the state file."""


async def _until_cancelled() -> None:
    await asyncio.get_running_loop().create_future()


def _record_key(index: int | None, hex_pdu: str) -> str:
    return f"{index}:{hashlib.sha1(hex_pdu.strip().upper().encode()).hexdigest()[:16]}"


def _event_number(event_id: str) -> int:
    try:
        return int(event_id)
    except ValueError:
        return -1


def _records(reply: Reply, prefix: str, *, index: int | None = None) -> list[tuple[int, str, int | None]]:
    """(index, hex PDU, TPDU length) from a +CMGL / +CMGR reply."""
    out = []
    lines = list(reply.lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.upper().startswith(prefix) and i + 1 < len(lines):
            try:
                args = parse_args(line)
            except Exception:  # noqa: BLE001 - a malformed header: skip it
                args = ()
            if prefix == "+CMGL:":
                idx = int(args[0]) if args and args[0].isdigit() else None
            else:
                idx = index
            length = int(args[-1]) if args and args[-1].isdigit() else None
            if idx is not None:
                out.append((idx, lines[i + 1].strip(), length))
            i += 2
        else:
            i += 1
    return out


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
    p.add_argument("--journal", required=True, help="the agent's journal file (its state goes beside it)")
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--smsc", help="SMS centre number, if the SIM's is wrong")
    p.add_argument("--hangup-after", type=float, help="seconds before a click-to-call is hung up")
    p.add_argument("--command-timeout", type=float, default=10.0)
    p.add_argument("--multipart-timeout", type=float, default=600.0)
    p.add_argument("--no-delivery-reports", action="store_true")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


async def _main(args: argparse.Namespace) -> int:
    settings = ModemSettings(port=args.port, pin=args.pin, baudrate=args.baudrate, smsc=args.smsc,
                             hangup_after=args.hangup_after, command_timeout=args.command_timeout,
                             multipart_timeout=args.multipart_timeout,
                             delivery_reports=not args.no_delivery_reports)
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
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
