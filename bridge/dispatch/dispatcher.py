"""The dispatcher.

The :class:`Dispatcher` pulls due jobs by priority from the store onto the online
devices of each job's account, within each device's credit window and send
rate; expires jobs past their ttl; and gives the jobs of a device that stayed
away longer than the grace time back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from bridge.config import Config, DeviceConfig
from bridge.dispatch.session import DeviceHealth, DeviceSession, RateLimiter
from bridge.store.model import Job
from bridge.store.protocols import JobQueue
from device_agents import protocol
from device_agents.tasks import TaskSet

log = logging.getLogger(__name__)

CLAIM_CHUNK = 64  # jobs claimed for one device in one go


class Dispatcher:
    def __init__(self, *, config: Config, store: JobQueue,
                 elsewhere: Callable[[str], bool] = lambda _device_id: False) -> None:
        self.config = config
        self.store = store
        # Whether a device is online on another daemon sharing the store: its jobs are not ours to requeue.
        self.elsewhere = elsewhere
        self.sessions: dict[str, DeviceSession] = {}
        self.health: dict[str, DeviceHealth] = {d.id: DeviceHealth() for d in config.devices}
        self._limiters: dict[str, RateLimiter] = {}
        self._wake = asyncio.Event()
        self._rotation = 0
        self._claim_lock = asyncio.Lock()
        self._tasks = TaskSet()
        self.on_online: list[Callable[[str, bool], None]] = []
        # Device kinds whose calls the bridge places itself (Android: through
        # adb, which works while the phone is locked): kind -> dial(device_id, number).
        self.dialers: dict[str, Callable[[str, str], Awaitable[None]]] = {}

    def reload(self, config: Config) -> None:
        self.config = config
        for d in config.devices:
            self.health.setdefault(d.id, DeviceHealth())
            limiter = self._limiters.get(d.id)
            if limiter is not None:
                limiter.per_minute = d.max_per_minute
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def limiter(self, device: DeviceConfig) -> RateLimiter:
        limiter = self._limiters.get(device.id)
        if limiter is None:
            limiter = self._limiters[device.id] = RateLimiter(device.max_per_minute)
        return limiter

    # -- sessions come and go ------------------------------------------------

    async def attach(self, session: DeviceSession) -> None:
        """A device has said hello: resume what it had, then give it work."""
        old = self.sessions.get(session.device_id)
        if old is not None:
            old.closed = True
            with contextlib.suppress(Exception):
                await old.ws.close(protocol.CLOSE_REPLACED, "replaced by a newer session")
        self.sessions[session.device_id] = session
        health = self.health.setdefault(session.device_id, DeviceHealth())
        health.online = True
        health.last_seen = time.time()
        health.capabilities = session.hello.capabilities
        health.agent = session.hello.agent
        health.reason = "connected"
        # Jobs the store holds as dispatched to this device that its ledger does
        # not know never reached it: push them again. The others it has: their
        # outcome comes as events (the agent kept them in its outbox).
        inflight = await self.store.in_flight(session.device_id)
        repush = await self.store.reconcile(session.device_id, session.hello.ledger)
        session.inflight = len(inflight)
        if repush:
            log.info("device %s: pushing %d job(s) again after reconnect", session.device_id, len(repush))
            await session.push(repush)
        for callback in self.on_online:
            callback(session.device_id, True)
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
            for callback in self.on_online:
                callback(session.device_id, False)

    def finished(self, session: DeviceSession, count: int) -> None:
        if count:
            session.inflight = max(0, session.inflight - count)
            self.wake()

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
            sessions = list(self.sessions.values())
            if not sessions:
                return 1.0
            self._rotation = (self._rotation + 1) % len(sessions)
            sessions = sessions[self._rotation:] + sessions[:self._rotation]
            now = time.time()
            wait = 1.0
            wants: list[tuple[DeviceSession, int]] = []
            for session in sessions:
                if session.closed:
                    continue
                limiter = self.limiter(session.device)
                room = min(session.window - session.inflight, limiter.available(now), CLAIM_CHUNK)
                if room > 0:
                    wants.append((session, room))
                    continue
                free_at = limiter.next_free(now)
                if free_at is not None:
                    wait = min(wait, max(0.01, free_at - now))
            # All claims of a round go to the store together: it commits them as one.
            claimed = await asyncio.gather(*(
                self.store.claim(s.account, s.device_id, room,
                                 kinds=("sms", "call") if s.hello.capabilities.calls else ("sms",))
                for s, room in wants))
            again = False
            pushes = []
            for (session, room), jobs in zip(wants, claimed, strict=True):
                if not jobs:
                    continue
                session.inflight += len(jobs)
                self.limiter(session.device).record(now, len(jobs))
                pushes.append(self._push(session, jobs))
                again = again or len(jobs) == room
            await asyncio.gather(*pushes)
            return 0 if again else wait

    async def _push(self, session: DeviceSession, jobs: list[Job]) -> None:
        dialer = self.dialers.get(session.device.kind)
        if dialer is not None:
            calls = [j for j in jobs if j.kind == "call"]
            jobs = [j for j in jobs if j.kind != "call"]
            for job in calls:
                self._tasks.spawn(self._dial(session, job, dialer))
        if not jobs:
            return
        try:
            await session.push(jobs)
        except Exception as exc:  # noqa: BLE001 - the session is going; jobs stay dispatched
            log.info("device %s: push failed (%s); its jobs wait for it to come back", session.device_id, exc)

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
            try:
                await self.maintain()
            except Exception:
                log.exception("maintenance failed; retrying")
            await asyncio.sleep(2.0)

    async def maintain(self) -> None:
        expired = await self.store.expire()
        if expired:
            log.info("%d job(s) expired", expired)
        grace = self.config.agents.requeue_grace_s
        now = time.time()
        # Configured devices, and any that still hold jobs after a reload removed them.
        device_ids = dict.fromkeys([d.id for d in self.config.devices] + await self.store.devices_in_flight())
        for device_id in device_ids:
            if device_id in self.sessions:
                continue
            health = self.health.setdefault(device_id, DeviceHealth(reason="removed from the configuration"))
            if self.elsewhere(device_id):
                health.offline_since = now  # held by another daemon: the grace counts from when it leaves there
                continue
            if now - health.offline_since < grace:
                continue
            count = await self.store.requeue_device(
                device_id, now - grace, reason=f"device offline for more than {grace:g} s",
                max_attempts=self.config.dispatcher.max_attempts)
            if count:
                log.warning("device %s offline for more than %g s: %d job(s) back in the queue",
                            device_id, grace, count)
                self.wake()
