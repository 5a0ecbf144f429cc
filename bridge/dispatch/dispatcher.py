"""The dispatcher.

The :class:`Dispatcher` pulls due jobs by priority from the store onto the online
devices of each job's account, within each device's credit window and pace
(caps per minute, hour and day counted in parts, random gaps: see
:class:`~bridge.dispatch.session.Pacer`), keeping a contact on the SIM it
had (``sticky``) and out of its quiet hours; expires jobs past their ttl; and
marks ``unconfirmed`` the jobs of a device that stayed away longer than the
grace time (it may have sent them: they wait for it, never for another device).

Idle costs nothing per device: an account whose claims came back empty is
not asked again until new work is announced (:meth:`Dispatcher.wake`), its
next scheduled job is due, or a minute has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from bridge.config import Config, DeviceConfig
from bridge.core import numbers
from bridge.core.sealing import Sealer, SealError
from bridge.dispatch.session import DeviceHealth, DeviceSession, Pacer
from bridge.store.model import URGENT, Job, StoreUnavailable
from bridge.store.protocols import JobQueue
from device_agents import protocol
from device_agents.tasks import TaskSet

log = logging.getLogger(__name__)

CLAIM_CHUNK = 64  # jobs claimed for one device in one go
MAX_PARTS = 100  # more than any message has (5,000 characters of UCS-2: 75 parts)
IDLE_RECHECK_S = 60.0  # an idle account is asked again after this long, whatever happens
# Maintenance (ttl expiry, the jobs of devices offline past their grace) runs when
# something calls for it: a job's ttl ends, a device's grace ends, work came or a
# device went. No more often than MAINTAIN_S however busy, and at least every
# MAINTAIN_IDLE_S (another daemon on the store may have enqueued or gone).
MAINTAIN_S = 2.0
MAINTAIN_IDLE_S = 30.0
STICKY_WAIT_S = 60.0  # a sticky device that can send within this long keeps its contacts
# A send counts in a device's windows from when its frame has left for the
# device plus this margin: a phone counts when the job reaches it (Android's
# SmsUsageMonitor), a little after; without the margin a window could end here
# before it ends there. It must cover how much later one job may reach the
# phone than the next (the trip's spread: ``bench.fleet`` prints the closest
# any send came to a cap as ``cap_headroom_min_ms``; with 0.1 s, on a machine
# at load 19, sends broke the cap by up to 0.37 s). It is also what a
# priority-2 message waits beyond a cap's free slot, and costs 0.25 s a minute
# of the allowed rate (0.4 %).
#
# An agent that keeps the caps itself (``Capabilities.keeps_caps``: it is told
# them in the welcome, holds a job until its parts fit and counts it as it asks
# the phone, device_agents/pacing.py) is counted from when the frame left,
# without the margin: a job may reach it a little before the phone's slot, and
# waits there for it, so the phone's clock decides and a priority-2 message
# waits for the slot only.
PACING_MARGIN_S = 0.25


def pacing_margin(session: DeviceSession) -> float:
    """What a push to ``session`` is counted later than its frame left."""
    return 0.0 if session.hello.capabilities.keeps_caps else PACING_MARGIN_S


def quiet_until(device: DeviceConfig, phone_number: str, now: float, default_zone: str) -> float | None:
    """The end of ``device``'s quiet hours in the recipient's time zone (read
    from the number when it tells one zone, else the device's or the API's),
    if it is quiet there now; else None."""
    if device.quiet_hours is None:
        return None
    start, end = device.quiet_hours
    zone = ZoneInfo(numbers.time_zone(phone_number) or device.timezone or default_zone)
    local = dt.datetime.fromtimestamp(now, zone)
    minute = local.hour * 60 + local.minute
    quiet = start <= minute < end if start < end else (minute >= start or minute < end)
    if not quiet:
        return None
    until = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if until <= local:
        until += dt.timedelta(days=1)
    return until.timestamp()


class Dispatcher:
    def __init__(self, *, config: Config, store: JobQueue,
                 on_online: Callable[[str, bool], None] | None = None,
                 dialer_for: Callable[[str], Callable[[str, str], Awaitable[None]] | None] | None = None,
                 elsewhere: Callable[[str], bool] = lambda _device_id: False,
                 sealer: Sealer | None = None) -> None:
        """``on_online(device_id, online)`` hears every session that comes or
        goes; ``dialer_for(kind)`` gives the dial function of a kind whose
        calls the bridge places itself (Android: through adb, which works
        while the phone is locked), or None when its agents dial;
        ``elsewhere(device_id)`` says whether a device is online on another
        daemon sharing the store. ``sealer`` opens the sealed text of a job
        (a verification code's) as it is pushed: the only place it is opened."""
        self.config = config
        self.sealer = sealer
        self.store = store
        # Whether a device is online on another daemon sharing the store: its jobs are not ours to requeue.
        self.elsewhere = elsewhere
        self.sessions: dict[str, DeviceSession] = {}
        self.health: dict[str, DeviceHealth] = {d.id: DeviceHealth() for d in config.devices}
        self._pacers: dict[str, Pacer] = {}
        self._idle: dict[str, float] = {}  # account -> asked again at (see the module's doc)
        self._news = 0  # counts wake()s: a round marks nothing idle if new work came meanwhile
        self._available: frozenset[str] = frozenset()  # devices that can send soon (sticky senders)
        self._wake = asyncio.Event()
        self._maintain_due = asyncio.Event()
        self._rotation = 0
        self._claim_lock = asyncio.Lock()
        self._tasks = TaskSet()
        self._on_online = on_online
        self._dialer_for = dialer_for

    def reload(self, config: Config) -> None:
        self.config = config
        for d in config.devices:
            self.health.setdefault(d.id, DeviceHealth())
            pacer = self._pacers.get(d.id)
            if pacer is not None:
                pacer.reconfigure(d)
        self.wake()
        self._maintain_due.set()

    def wake(self) -> None:
        """New work may be there (enqueued, requeued, a device came or went):
        every account is asked again."""
        self._news += 1
        self._idle.clear()
        for pacer in self._pacers.values():
            pacer.need = 1
        self._wake.set()

    def queue_changed(self) -> None:
        """Work was enqueued or returned, for any account: its ttl may end before
        maintenance would look again."""
        self._maintain_due.set()

    def _kick(self) -> None:
        """Room opened on a device: a round, without forgetting who is idle."""
        self._wake.set()

    def pacer(self, device: DeviceConfig) -> Pacer:
        pacer = self._pacers.get(device.id)
        if pacer is None:
            pacer = self._pacers[device.id] = Pacer(device)
        return pacer

    # -- sessions come and go ------------------------------------------------

    async def attach(self, session: DeviceSession) -> None:
        """A device has said hello: resume what it had, then give it work."""
        old = self.sessions.get(session.device_id)
        if old is not None:
            old.closed = True
            with contextlib.suppress(Exception):
                await old.ws.close(protocol.CLOSE_REPLACED, "replaced by a newer session")
        # Under the claim lock: a dispatch round must not claim for the session between the
        # count of its jobs in flight and the assignment of that count (it would count twice).
        async with self._claim_lock:
            self.sessions[session.device_id] = session
            health = self.health.setdefault(session.device_id, DeviceHealth())
            health.online = True
            health.last_seen = time.time()
            health.capabilities = session.hello.capabilities
            health.agent = session.hello.agent
            health.reason = "connected"
            if session.hello.capabilities.keeps_caps:
                # A daemon that has counted nothing for the device yet (it has just started)
                # counts what the agent sent inside its windows: the caps hold across a restart.
                self.pacer(session.device).seed(time.time(), session.hello.sent)
            # Jobs the store holds as dispatched to this device (or waiting for its link)
            # that its ledger does not know never reached it: push them again. The others
            # it has: their outcome comes as events (the agent kept them in its outbox).
            # Jobs pushed to an earlier journal of the device become unconfirmed.
            repush = await self.store.reconcile(session.device_id, session.hello.journal, session.hello.ledger)
            session.inflight = len(await self.store.in_flight(session.device_id))
        if repush:
            log.info("device %s: pushing %d job(s) again after reconnect", session.device_id, len(repush))
            await self._send(session, repush)
        if self._on_online is not None:
            self._on_online(session.device_id, True)
        self.wake()

    def detach(self, session: DeviceSession, reason: str) -> None:
        session.closed = True
        if self.sessions.get(session.device_id) is session:
            del self.sessions[session.device_id]
            health = self.health.setdefault(session.device_id, DeviceHealth())
            health.online = False
            health.offline_since = time.time()
            health.last_seen = time.time()
            health.reason = reason
            if self._on_online is not None:
                self._on_online(session.device_id, False)
            self.wake()  # its sticky contacts may go to others now
            self._maintain_due.set()  # its grace begins

    def finished(self, session: DeviceSession, count: int) -> None:
        if count:
            session.inflight = max(0, session.inflight - count)
            self._kick()

    def online(self, account: str | None = None) -> list[DeviceSession]:
        return [s for s in self.sessions.values() if account is None or s.account == account]

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._dispatch_loop())
            tg.create_task(self._maintenance_loop())

    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                timeout = await self.dispatch_round()
            except StoreUnavailable as exc:  # said once by the daemon; no traceback a second
                log.debug("dispatch round: %s; retrying", exc)
                timeout = 1.0
            except Exception:
                log.exception("dispatch round failed; retrying")
                timeout = 1.0
            if timeout == 0:
                await asyncio.sleep(0)  # let frames in between rounds
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def dispatch_round(self) -> float:
        """Give jobs to every device that can take some. Returns how long to
        wait before the next round (0: go again at once)."""
        async with self._claim_lock:
            sessions = [s for s in self.sessions.values() if not s.closed]
            if not sessions:
                return 1.0
            now = time.time()
            news = self._news
            for account, until in list(self._idle.items()):
                if until <= now:  # ask again, once for the account, not once per device
                    await self._idle_until(account, now)
            if all(s.account in self._idle for s in sessions):  # nothing to do: no polling either
                return max(0.001, min(self._idle.values()) - now)
            self._rotation = (self._rotation + 1) % len(sessions)
            sessions = sessions[self._rotation:] + sessions[:self._rotation]
            wait = 1.0
            available = frozenset(s.device_id for s in sessions
                                  if s.device.sticky and self.pacer(s.device).free_at(now) - now <= STICKY_WAIT_S)
            if available != self._available:
                self._available = available
                self._idle.clear()  # a sticky sender came or went: its contacts may move
            stickies: dict[str, list[str]] = {}  # account -> its sticky devices that can send soon
            for s in sessions:
                if s.device_id in available:
                    stickies.setdefault(s.account, []).append(s.device_id)
            wants: list[tuple[DeviceSession, int, int | None, int]] = []
            for session in sessions:
                idle_until = self._idle.get(session.account)
                if idle_until is not None:
                    if idle_until > now:
                        wait = min(wait, idle_until - now)
                        continue
                    del self._idle[session.account]
                room = min(session.window - session.inflight, CLAIM_CHUNK)
                if room <= 0:
                    continue  # finished() starts a round when room opens
                # The window's last place is kept for priority 2 (a one-time code does not
                # wait behind a campaign already in the phone), when the window has two.
                floor = URGENT if room == 1 and session.window > 1 else 0
                if session.window > 1 and room > 1 and room == session.window - session.inflight:
                    room -= 1
                pacer = self.pacer(session.device)
                budget = pacer.budget(now)
                if budget < pacer.need:
                    wait = min(wait, max(0.001, pacer.free_at(now) - now))
                    continue
                if pacer.spaced:
                    room = 1
                wants.append((session, room, budget if budget < MAX_PARTS else None, floor))
            # All claims of a round go to the store together: it commits them as one.
            claimed = await asyncio.gather(*(
                self.store.claim(s.account, s.device_id, room,
                                 kinds=("sms", "call") if s.hello.capabilities.calls else ("sms",),
                                 max_parts=max_parts, sticky=s.device.sticky, min_priority=floor,
                                 avoid=[d for d in stickies.get(s.account, ()) if d != s.device_id],
                                 journal=s.hello.journal)
                for s, room, max_parts, floor in wants))
            again = False
            pushes = []
            spaced: list[Pacer] = []  # devices that sent with a random gap: asked again when it ends
            empty: dict[str, bool] = {}  # account -> every conclusive claim came back empty
            for (session, room, max_parts, floor), jobs in zip(wants, claimed, strict=True):
                pacer = self.pacer(session.device)
                if not jobs:
                    if floor:
                        continue  # no priority-2 work says nothing of the rest
                    if max_parts is None or max_parts >= pacer.smallest_cap():
                        empty.setdefault(session.account, True)
                    elif self._news == news:  # the queue's head may not fit in what is left: wait for more room
                        # (not when work came meanwhile: wake() has just said the head may have changed,
                        # and a device needing more parts than it has would not count as available to
                        # its sticky contacts; the next round asks again)
                        pacer.need = min(pacer.smallest_cap(), max(pacer.need * 2, max_parts + 1))
                        wait = min(wait, max(0.001, pacer.free_at(now) - now))
                    continue
                empty[session.account] = False
                pacer.need = 1
                jobs = await self._keep_quiet(session, jobs, now)
                session.inflight += len(jobs)
                pushes.append(self._push(session, jobs, pacer))
                again = again or (len(jobs) == room and not pacer.spaced)
                if pacer.spaced:
                    spaced.append(pacer)
            await asyncio.gather(*pushes)  # each counts its sends in its device's pace
            for pacer in spaced:
                wait = min(wait, max(0.001, pacer.free_at(now) - now))
            for account, nothing in empty.items():
                if nothing and self._news == news:
                    await self._idle_until(account, now, claimed_nothing=True)
            # ``wait`` counts from ``now``, the round's start: what the round took is already gone.
            return 0 if again else max(0.001, wait - (time.time() - now))

    async def _idle_until(self, account: str, now: float, *, claimed_nothing: bool = False) -> None:
        """Mark ``account`` idle until its next scheduled job or the recheck,
        unless (asked again) it has due work."""
        news = self._news
        due = await self.store.next_due(account)
        recheck = now + IDLE_RECHECK_S
        if self._news != news:
            self._idle.pop(account, None)  # new work came while we asked
        elif due is not None and due <= now and not claimed_nothing:
            self._idle.pop(account, None)  # work is due: its devices claim this round
        else:
            self._idle[account] = min(due, recheck) if due is not None and due > now else recheck

    async def _keep_quiet(self, session: DeviceSession, jobs: list[Job], now: float) -> list[Job]:
        """Jobs whose recipient is in the device's quiet hours go back to the
        queue, due when those hours end; the others are returned."""
        if session.device.quiet_hours is None:
            return jobs
        later: dict[float, list[int]] = {}
        keep = []
        for job in jobs:
            until = quiet_until(session.device, job.phone_number, now, self.config.api.timezone)
            if until is None:
                keep.append(job)
            else:
                later.setdefault(until, []).append(job.id)
        for until, ids in later.items():
            await self.store.defer(session.device_id, ids, until, reason="quiet hours at the recipient's")
        if later:
            self._kick()
        return keep

    async def _push(self, session: DeviceSession, jobs: list[Job], pacer: Pacer) -> None:
        """Hand ``jobs`` to the device, then count them in its pace from the
        moment their frame left (see PACING_MARGIN_S, ``pacing_margin``)."""
        dialer = self._dialer_for(session.device.kind) if self._dialer_for is not None else None
        sends = jobs
        if dialer is not None:
            calls = [j for j in jobs if j.kind == "call"]
            sends = [j for j in jobs if j.kind != "call"]
            for job in calls:
                self._tasks.spawn(self._dial(session, job, dialer))
        try:
            if sends:
                await self._send(session, sends)
        except Exception as exc:  # noqa: BLE001 - the session is going; jobs stay dispatched
            log.info("device %s: push failed (%s); its jobs wait for it to come back", session.device_id, exc)
        finally:
            pacer.record(time.time() + pacing_margin(session), [j.parts for j in jobs])

    async def _send(self, session: DeviceSession, jobs: list[Job]) -> None:
        """Push ``jobs``, a sealed text opened here (and only here); a job
        whose text does not open fails (its masked text is never sent)."""
        out: list[protocol.Job] = []
        broken: list[protocol.Event] = []
        for job in jobs:
            if job.sealed is None:
                out.append(job.to_protocol())
                continue
            try:
                if self.sealer is None:
                    raise SealError("this daemon has no key to open sealed texts")
                pushed = job.to_protocol(self.sealer.open(job.sealed, job.phone_number))
                # Marked secret: the agent keeps no clear copy of the text on disk.
                out.append(dataclasses.replace(pushed, secret=True) if isinstance(pushed, protocol.SendSms)
                           else pushed)
            except (SealError, UnicodeDecodeError) as exc:
                log.error("job %s: its sealed text does not open (%s); failing it", job.id, exc)
                broken.append(protocol.JobState(event_id=f"bridge-seal-{job.id}-{job.attempts}", job_id=job.job_id,
                                                state=protocol.JOB_FAILED, at=time.time(),
                                                reason=f"its sealed text does not open: {exc}"))
        if broken:
            outcome = await self.store.apply_events(session.device_id, session.account, broken,
                                                    max_attempts=self.config.dispatcher.max_attempts)
            self.finished(session, outcome.finished)
        if out:
            await session.push(out)

    async def _dial(self, session: DeviceSession, job: Job,
                    dialer: Callable[[str, str], Awaitable[None]]) -> None:
        """Place a call from the bridge side and record its outcome like an agent's."""
        try:
            await dialer(session.device_id, job.phone_number)
            state, reason = protocol.JOB_SENT, None
        except Exception as exc:  # noqa: BLE001 - any refusal fails this call, not the dispatcher
            state, reason = protocol.JOB_FAILED, str(exc) or type(exc).__name__
        event = protocol.JobState(event_id=f"bridge-dial-{job.id}-{job.attempts + 1}", job_id=job.job_id,
                                  state=state, at=time.time(), reason=reason)
        outcome = await self.store.apply_events(session.device_id, session.account, [event],
                                                max_attempts=self.config.dispatcher.max_attempts)
        self.finished(session, outcome.finished)

    async def _maintenance_loop(self) -> None:
        while True:
            self._maintain_due.clear()
            try:
                next_at = await self.maintain()
            except Exception:
                log.exception("maintenance failed; retrying")
                next_at = 0.0
            await asyncio.sleep(MAINTAIN_S)  # however busy, no more often than this
            delay = min(next_at - time.time(), MAINTAIN_IDLE_S - MAINTAIN_S)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._maintain_due.wait()

    async def maintain(self) -> float:
        """Expire queued jobs past their ttl; leave unconfirmed the jobs of a device
        offline past its grace. Returns when (``time.time()``) it is next needed,
        unless something comes first (see :meth:`queue_changed`)."""
        now = time.time()
        next_at = now + MAINTAIN_IDLE_S
        expiry = await self.store.next_expiry()
        if expiry is not None and expiry <= now:
            expired = await self.store.expire(now)
            if expired:
                log.info("%d job(s) expired", expired)
            expiry = await self.store.next_expiry()
        if expiry is not None:
            next_at = min(next_at, expiry)
        grace = self.config.agents.requeue_grace_s
        in_flight = set(await self.store.devices_in_flight())
        # Configured devices, and any that still hold jobs after a reload removed them.
        for device_id in dict.fromkeys([*(d.id for d in self.config.devices), *sorted(in_flight)]):
            if device_id in self.sessions:
                continue
            health = self.health.setdefault(device_id, DeviceHealth(reason="removed from the configuration"))
            if self.elsewhere(device_id):
                health.offline_since = now  # held by another daemon: the grace counts from when it leaves there
                if device_id in in_flight:
                    next_at = min(next_at, now + MAINTAIN_S)  # to see it leave there
                continue
            if device_id not in in_flight:
                continue  # nothing of it to leave unconfirmed
            if now - health.offline_since < grace:
                next_at = min(next_at, health.offline_since + grace)
                continue
            # It may have sent them (a phone keeps working while its link is down): they
            # wait for it as unconfirmed, never for another device; its hello settles them.
            count = await self.store.strand_device(
                device_id, now - grace,
                reason=f"device offline for more than {grace:g} s: it may have sent it; waiting for it")
            next_at = min(next_at, now + grace)  # any it was given within its grace (by another daemon)
            if count:
                log.warning("device %s offline for more than %g s: %d job(s) unconfirmed until it comes back",
                            device_id, grace, count)
        return next_at
