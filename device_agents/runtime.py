"""What every device agent does the same way: connect, resume, run jobs, report.

A *backend* knows its device (a virtual radio, a modem, a phone); the
:class:`AgentRuntime` around it holds the websocket to the bridge, reconnects
with capped exponential backoff, keeps the ledger and outbox in a
:class:`~device_agents.journal.Journal`, never runs a job twice, and sends
every event until the bridge acks it.

Job life inside the agent (the journal's states)::

    accepted ──▶ sending ──▶ sent ──▶ delivered
        │            └──────▶ failed
        └──▶ rejected   (lease lapsed or agent restarted before the radio was touched)

``sending`` is written *before* the radio is touched. A job found in
``sending`` after a crash is never transmitted again: the backend's
``recover`` says what became of it (the virtual radio checks its log, the
Android helper the phone's sent box), or it is reported failed as "outcome
unknown".

A journal the disk refuses to write (full, read-only) stops the agent taking
jobs, not its tasks: it is logged, no job is begun (its ``sending`` could not
be written), jobs pushed meanwhile and outcomes of jobs already on the radio
are held in memory in order, and all is written, then sent, once the journal
takes a write again (tried with backoff). ``journal_fault`` says why meanwhile.
Events a backend reads from its device (incoming SMS, calls) go through
:meth:`AgentRuntime.try_emit`: refused, the device keeps them (the modem does
not delete the SMS from its storage, the phone's read position does not move)
and they are read or emitted again once the journal takes writes.

The caps of the welcome (SMS parts per sliding minute, hour and day) are kept
here, for every backend (:mod:`device_agents.pacing`): a job is begun once its
parts fit, counted once the backend has been asked to send it (what the phone
counts, no later). While the job at the head waits for its slot, a job of higher
priority that comes meanwhile goes first. The wait counts against the lease; a
job whose slot would come after its lease is rejected at once (back to the
queue) rather than held to the lease's end.

The device's status (battery, signal, network) is looked at every
``status_interval`` and sent when it changed, or at least every
``STATUS_REFRESH_S``, and once on every connection: an unchanged status every
30 s cost the bridge a frame a device twice a minute, for nothing. What keeps
the link alive is the websocket ping every ``PING_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import protocol
from .journal import Journal
from .modem.gsm7 import segment_count
from .pacing import CapPacer
from .tasks import TaskSet

PING_INTERVAL_S = 20.0  # websocket ping to the bridge; no pong within as long: reconnect
STATUS_REFRESH_S = 300.0  # an unchanged status is sent again after this long

log = logging.getLogger(__name__)

SENDING = "sending"  # journal-only state: the radio may have been touched
FINAL = frozenset({protocol.JOB_SENT, protocol.JOB_DELIVERED, protocol.JOB_FAILED})
RECENT_LEDGER_S = 3600.0
HELLO_LEDGER_MAX = 5000


class Reporter(Protocol):
    def __call__(self, job_id: str, state: str, *, reason: str | None = None,
                 parts: int | None = None, network_ref: str | None = None) -> None: ...


class Backend(Protocol):
    """The device side of an agent."""

    capabilities: protocol.Capabilities

    async def execute(self, job: protocol.Job, report: Reporter) -> None:
        """Run one job; call ``report`` for sent/delivered/failed (possibly later)."""

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        """After a crash: (state, reason) for a job that was being transmitted."""

    def status(self) -> protocol.Status | None:
        """The device's health now, or None when unknown."""


class AgentRuntime:
    def __init__(self, *, url: str, device_id: str, token: str, backend: Backend,
                 journal: Journal, agent_name: str = "simbridge-agent", window: int = 8,
                 workers: int = 1, status_interval: float = 30.0, ssl: Any = None,
                 sims: tuple[protocol.Sim, ...] = (), timezone: str | None = None,
                 backoff_max: float = 30.0, on_connect: Callable[[Any], None] | None = None) -> None:
        self.url = url
        self.device_id = device_id
        self.token = token
        self.backend = backend
        self.journal = journal
        self.agent_name = agent_name
        self.window = window
        self.workers = workers
        self.status_interval = status_interval
        self._status_sent: tuple[protocol.Status, float] | None = None  # on this connection: (reading, when)
        self.ssl = ssl
        self.sims = sims
        self.timezone = timezone
        self.backoff_max = backoff_max
        # Called with the open websocket before the hello (which proves the
        # token): e.g. checking a pinned certificate. Raising refuses the bridge.
        self.on_connect = on_connect
        self.lease_s = 60.0
        # Waiting jobs, a heap: highest priority first, then in the order they came:
        # (-priority, arrival number, job, received at). ``_queued`` is set when one comes.
        self._queue: list[tuple[int, int, protocol.Job, float]] = []
        self._queued = asyncio.Event()
        self._arrivals = itertools.count()
        # The caps of the last welcome, kept across reconnects with the sends they counted;
        # ``_gate``: one worker at a time picks a job and counts it (the check and the count are one step).
        self.pacer = CapPacer()
        self._gate = asyncio.Lock()
        self._ws: Any = None
        self._unsent: dict[str, protocol.Event] = {}
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.on_state: Callable[[str], None] | None = None
        self._tasks = TaskSet()
        self.log = logging.LoggerAdapter(log, {"device": device_id})
        # The journal refused a write: why, what waits for it, and when it takes writes again.
        self.journal_fault: str | None = None
        self._journal_ok = asyncio.Event()
        self._journal_ok.set()
        self._held_reports: list[tuple[str, str, dict[str, Any]]] = []  # (job_id, state, kwargs)
        self._held_jobs: list[tuple[protocol.Job, float]] = []

    # -- events ------------------------------------------------------------

    def emit(self, events: list[protocol.Event]) -> None:
        """Persist events in the outbox, then queue them for sending."""
        self.journal.add_events(events)
        for ev in events:
            self._unsent[ev.event_id] = ev
        self._wake.set()

    def try_emit(self, events: list[protocol.Event]) -> bool:
        """:meth:`emit`, or False when the journal refuses the write: nothing
        is written nor queued, the fault is noted (``journal_fault``) and the
        journal probed; the caller keeps what the events came from (an SMS on
        the SIM, a phone's read position) and tries again once
        :meth:`journal_writable` returns."""
        try:
            self.emit(events)
        except OSError as exc:
            self._journal_failed(exc)
            return False
        return True

    def journal_refused(self, exc: OSError) -> None:
        """A backend's own write to the journal was refused: noted as the
        runtime's are (``journal_fault``, probed until it takes writes)."""
        self._journal_failed(exc)

    async def journal_writable(self) -> None:
        """Return once the journal takes writes (at once when it does)."""
        await self._journal_ok.wait()

    def report(self, job_id: str, state: str, *, reason: str | None = None,
               parts: int | None = None, network_ref: str | None = None) -> None:
        """Record and send a job's new state. Never raises for the journal: an
        outcome it cannot write is held (in order) until it can."""
        entry = (job_id, state, {"reason": reason, "parts": parts, "network_ref": network_ref})
        if self.journal_fault is not None:
            self._held_reports.append(entry)
            return
        try:
            self._report_once(entry)
        except OSError as exc:
            self._held_reports.append(entry)
            self._journal_failed(exc)

    def _report_once(self, entry: tuple[str, str, dict[str, Any]]) -> None:
        job_id, state, kwargs = entry
        current = self.journal.state_of(job_id)
        if state == current:
            return  # said already (it is in the outbox, or the bridge has it)
        if current in (protocol.JOB_DELIVERED, protocol.JOB_FAILED):
            return  # final: a late report changes nothing
        # The state and its event in one write: both or neither. The event names the
        # dispatch it reports (the job's attempt as last pushed), for the bridge to tell
        # a late report of an earlier dispatch from one of this.
        event = protocol.JobState(event_id=self.journal.next_event_id(), job_id=job_id,
                                  state=state, at=time.time(), attempt=self.journal.attempt_of(job_id), **kwargs)
        self.journal.set_job_and_add_event(job_id, state, event)
        self._unsent[event.event_id] = event
        self._wake.set()

    # -- a journal the disk refuses -----------------------------------------

    def _journal_failed(self, exc: OSError) -> None:
        if self.journal_fault is None:
            self.journal_fault = f"journal {self.journal.path} cannot be written: {exc.strerror or exc}"
            self.log.error("%s; taking no job until it can (outcomes held in memory)", self.journal_fault)
            self._journal_ok.clear()
            self._tasks.spawn(self._journal_retry())

    async def _journal_retry(self) -> None:
        delay = 0.25
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                self.journal.probe()
                while self._held_reports:
                    self._report_once(self._held_reports[0])
                    self._held_reports.pop(0)
                held, self._held_jobs = self._held_jobs, []
                try:
                    self._record_taken(held)
                except OSError:
                    self._held_jobs = held + self._held_jobs
                    raise
            except OSError:
                continue
            break
        self.log.warning("journal %s takes writes again; taking jobs", self.journal.path)
        self.journal_fault = None
        self._journal_ok.set()

    def new_event_id(self) -> str:
        return self.journal.next_event_id()

    # -- start-up ----------------------------------------------------------

    async def _recover(self) -> None:
        """Settle jobs that a crash left half done, before the first hello."""
        for job_id, entry in list(self.journal.jobs.items()):
            state = entry["state"]
            if state == protocol.JOB_ACCEPTED:
                self.report(job_id, protocol.JOB_REJECTED, reason="agent restarted before transmission")
            elif state == SENDING:
                job = protocol.job_from_json(entry["job"]) if "job" in entry else None
                outcome: str
                reason: str | None
                if job is None:
                    outcome, reason = protocol.JOB_FAILED, "outcome unknown after agent restart"
                else:
                    outcome, reason = await self.backend.recover(job)
                self.report(job_id, outcome, reason=reason)
                if job is not None and outcome == protocol.JOB_SENT:
                    self._resume_sent(job)  # recovered as sent: its delivery report is still due
            elif state == protocol.JOB_SENT and "job" in entry:
                self._resume_sent(protocol.job_from_json(entry["job"]))

    def _resume_sent(self, job: protocol.Job) -> None:
        resume = getattr(self.backend, "resume_sent", None)
        if resume is not None:
            resume(job, self.report)

    def _hello(self, challenge: protocol.Challenge) -> protocol.Hello:
        cutoff = time.time() - RECENT_LEDGER_S
        ledger: list[protocol.LedgerEntry] = []
        for job_id, entry in reversed(self.journal.jobs.items()):
            if len(ledger) >= HELLO_LEDGER_MAX:
                break
            if entry["state"] not in FINAL or entry["at"] >= cutoff:
                state = protocol.JOB_ACCEPTED if entry["state"] == SENDING else entry["state"]
                ledger.append(protocol.LedgerEntry(job_id=job_id, state=state))
        return protocol.answer(challenge, device_id=self.device_id, token=self.token, agent=self.agent_name,
                               capabilities=dataclasses.replace(self.backend.capabilities, keeps_caps=True),
                               sims=self.sims,
                               window=self.window, ledger=tuple(ledger), timezone=self.timezone,
                               journal=self.journal.journal_id, sent=self.pacer.recent(time.time()))

    # -- the connection loop ---------------------------------------------

    async def run(self) -> None:
        import websockets

        await self._recover()
        for n in range(self.workers):
            self._tasks.spawn(self._kept(f"worker {n + 1}", self._worker))
        self._tasks.spawn(self._kept("status", self._status_loop))
        delay = 0.5
        failures = 0
        while True:
            try:
                async with websockets.connect(self.url, max_size=protocol.MAX_FRAME_BYTES,
                                              ssl=self.ssl, compression=None, open_timeout=10,
                                              ping_interval=PING_INTERVAL_S,
                                              ping_timeout=PING_INTERVAL_S) as ws:
                    await self._session(ws)
                    delay = 0.5
                    failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                self.log.log(level, "connection to bridge failed (%s): %s; retrying",
                             type(exc).__name__, exc)
            finally:
                self._ws = None
                self.connected.clear()
                if self.on_state:
                    self.on_state("offline")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max)

    async def _session(self, ws: Any) -> None:
        if self.on_connect is not None:
            self.on_connect(ws)
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        async with asyncio.timeout(15):
            frame = await ws.recv()
        challenge = protocol.decode(frame, allowed=protocol.BRIDGE_TO_AGENT)
        if not isinstance(challenge, protocol.Challenge):
            raise protocol.RemoteProtocolError(f"expected challenge, got {challenge.type}")
        if challenge.version != protocol.PROTOCOL_VERSION:
            raise protocol.RemoteProtocolError(f"the bridge speaks protocol version {challenge.version}, "
                                               f"this agent {protocol.PROTOCOL_VERSION}: update one of them")
        await ws.send(protocol.encode(self._hello(challenge)))
        async with asyncio.timeout(15):
            frame = await ws.recv()
        welcome = protocol.decode(frame, allowed=protocol.BRIDGE_TO_AGENT)
        if not isinstance(welcome, protocol.Welcome):
            raise protocol.RemoteProtocolError(f"expected welcome, got {welcome.type}")
        self.lease_s = welcome.lease_s
        self.pacer.configure(welcome.caps)
        self._queued.set()  # a held job may fit the new caps
        self._ws = ws
        self.connected.set()
        if self.on_state:
            self.on_state("online")
        self.log.info("connected to bridge")
        # Everything not acked goes again, in order.
        self._unsent = {e.event_id: e for e in self.journal.pending_events()}
        self._wake.set()
        self._status_sent = None
        await self._send_status(ws)
        sender = asyncio.create_task(self._sender(ws))
        try:
            async for frame in ws:
                self._on_frame(protocol.decode(frame, allowed=protocol.BRIDGE_TO_AGENT))
        finally:
            # Never suppress CancelledError here: it may be ours, not the sender's.
            sender.cancel()
            await asyncio.wait([sender])

    async def _sender(self, ws: Any) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._unsent:
                batch = [self._unsent.pop(event_id) for event_id in list(self._unsent)[: protocol.MAX_BATCH // 4]]
                # Split to fit the frame limit: 40 long incoming SMS do not fit one frame.
                for frame in protocol.encode_batches(lambda events: protocol.Events(events=events), batch):
                    await ws.send(frame)

    def _on_frame(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.Ack):
            try:
                self.journal.ack(message.event_ids)
            except OSError as exc:  # not written: those events go again later, the bridge knows them
                self._journal_failed(exc)
        elif isinstance(message, protocol.Jobs):
            self._take_jobs(message.jobs)
        elif isinstance(message, protocol.NewCaps):  # a reload changed them: what was counted stays
            self.pacer.configure(message.caps)
            self._queued.set()  # a held job may fit the new caps

    def _take_jobs(self, jobs: tuple[protocol.Job, ...]) -> None:
        now = time.monotonic()
        fresh = []
        held = {j.job_id for j, _ in self._held_jobs}
        for job in jobs:
            known = self.journal.state_of(job.job_id)
            if job.job_id in held:
                continue  # waits for the journal already
            if known is None or known == protocol.JOB_REJECTED:
                fresh.append(job)
            elif not any(getattr(e, "job_id", None) == job.job_id for e in self._unsent.values()):
                # Pushed again (the bridge did not see our answer): say where it is,
                # never run it twice.
                state = protocol.JOB_ACCEPTED if known == SENDING else known
                try:
                    self.emit([protocol.JobState(event_id=self.journal.next_event_id(), job_id=job.job_id,
                                                 state=state, at=time.time(), reason="already known",
                                                 attempt=job.attempt)])
                except OSError as exc:  # the bridge asks again
                    self._journal_failed(exc)
        if not fresh:
            return
        if self.journal_fault is not None:
            self._held_jobs.extend((job, now) for job in fresh)
            return
        try:
            self._record_taken([(job, now) for job in fresh])
        except OSError as exc:
            self._held_jobs.extend((job, now) for job in fresh)
            self._journal_failed(exc)

    def _record_taken(self, jobs: list[tuple[protocol.Job, float]]) -> None:
        """Jobs accepted: in the journal, then queued for the workers (OSError: neither)."""
        if jobs:
            # A secret job's text is not written (protocol.job_to_journal).
            self.journal.record_jobs((j.job_id, protocol.JOB_ACCEPTED, protocol.job_to_journal(j)) for j, _ in jobs)
            for job, received in jobs:
                heapq.heappush(self._queue, (-job.priority, next(self._arrivals), job, received))
            self._queued.set()

    @staticmethod
    def _parts(job: protocol.Job) -> int:
        """The SMS parts ``job`` counts in the caps (a call: none)."""
        return segment_count(job.text).parts if isinstance(job, protocol.SendSms) else 0

    async def _worker(self) -> None:
        while True:
            if not self.pacer.capped:  # no caps to keep: nothing to count, nothing waits
                job, _ = await self._begin()
                if self.pacer.capped:  # caps came meanwhile: this one counts from now
                    self.pacer.record(time.time(), self._parts(job))
                await self._execute(job)
                continue
            async with self._gate:  # nothing else is counted meanwhile: what fitted still fits
                job, parts = await self._begin()
                run = asyncio.ensure_future(self._execute(job))
                try:
                    await asyncio.sleep(0)  # its first step has run: the device has been asked
                except BaseException:
                    run.cancel()
                    raise
                # Counted once asked, not before: the device counted it no later than this
                # (the virtual phone stamps it in that first step), so a window never ends
                # here before it ends there, however the two moments are scheduled.
                self.pacer.record(time.time(), parts)
            await run  # cancelled with the worker

    async def _execute(self, job: protocol.Job) -> None:
        try:
            await self.backend.execute(job, self.report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend bug fails the job, not the agent
            self.log.exception("job %s failed in the backend", job.job_id)
            self.report(job.job_id, protocol.JOB_FAILED, reason=f"agent error: {exc}")

    async def _begin(self) -> tuple[protocol.Job, int]:
        """The next job to run and its parts (under ``_gate``): taken once its
        parts fit the caps, written ``sending``."""
        while True:
            job, received, parts = await self._next_fitting()
            await self._journal_ok.wait()
            if time.monotonic() - received > self.lease_s:
                self.report(job.job_id, protocol.JOB_REJECTED,
                            reason=f"not begun within the {self.lease_s:g} s lease")
                continue
            while True:  # written before the radio is touched, or the radio is not touched
                try:
                    self.journal.set_job(job.job_id, SENDING)
                    break
                except OSError as exc:
                    self._journal_failed(exc)
                    await self._journal_ok.wait()
            return job, parts

    async def _next_fitting(self) -> tuple[protocol.Job, float, int]:
        """The waiting job of highest priority, once its parts fit the caps.
        While it waits, a job that comes is looked at again: one of higher
        priority goes first (it may need fewer parts, or none: a call)."""
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            _, _, job, received = self._queue[0]
            if not self.pacer.capped:
                heapq.heappop(self._queue)
                return job, received, 0
            parts = self._parts(job)
            if not self.pacer.fits_ever(parts):
                heapq.heappop(self._queue)
                self.report(job.job_id, protocol.JOB_REJECTED,
                            reason=f"{parts} parts: more than one of this device's caps allows")
                continue
            now = time.time()
            wait = self.pacer.free_at(now, parts) - now
            if wait <= 0:
                heapq.heappop(self._queue)
                return job, received, parts
            if time.monotonic() + wait - received > self.lease_s:
                # Its slot comes after its lease: back to the queue now, not at the lease's end.
                heapq.heappop(self._queue)
                self.report(job.job_id, protocol.JOB_REJECTED,
                            reason=f"this device's caps have no room for it within the {self.lease_s:g} s lease")
                continue
            self._queued.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._queued.wait()

    async def _kept(self, name: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task``; should it fail, log it and run it again (a worker never dies silently)."""
        while True:
            try:
                await task()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("agent %s failed; restarted", name)
                await asyncio.sleep(1.0)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.status_interval)
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(Exception):
                    await self._send_status(ws)

    async def _send_status(self, ws: Any) -> None:
        """Send the device's status if it changed since the last one sent on
        this connection (its time aside), or that one is STATUS_REFRESH_S old."""
        status = self.backend.status()
        if status is None:
            return
        reading = dataclasses.replace(status, at=0.0)
        last = self._status_sent
        now = time.monotonic()
        if last is not None and last[0] == reading and now - last[1] < STATUS_REFRESH_S:
            return
        await ws.send(protocol.encode(status))
        self._status_sent = (reading, now)

    async def aclose(self) -> None:
        await self._tasks.aclose()
        self.journal.close()
