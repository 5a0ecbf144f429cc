"""Voice calls on the modem: incoming ones reported as call events, dial jobs
placed with ATD and hung up after their time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .. import protocol
from ..common import mask_number
from ..runtime import Reporter
from ..tasks import TaskSet
from .at import Urc
from .calls import CallState, CallTracker, FinishedCall
from .durable import ModemJournal
from .incoming import RuntimeHolder
from .serial_link import CommandError
from .session import ModemSession
from .settings import ModemSettings

CALL_URCS = frozenset({"RING", "+CRING", "+CLIP", "NO CARRIER", "BUSY", "NO ANSWER"})


class Dialer:
    def __init__(self, *, session: ModemSession, journal: ModemJournal, holder: RuntimeHolder,
                 settings: ModemSettings, tasks: TaskSet, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.session = session
        self.journal = journal
        self.holder = holder
        self.settings = settings
        self.tasks = tasks
        self.log = log
        self.calls = CallTracker(ring_gap=settings.ring_gap)
        self._lock = asyncio.Lock()
        self._over = asyncio.Event()

    # -- what the modem says -------------------------------------------------------------

    def on_urc(self, urc: Urc, now: float) -> None:
        name = urc.name
        if name in ("RING", "+CRING"):
            self.calls.ring(now)
        elif name == "+CLIP":
            self.calls.clip(urc.args[0] if urc.args else "", now)
        else:  # NO CARRIER, BUSY, NO ANSWER
            self.finished(self.calls.ended(now))

    def deadline(self) -> float | None:
        return self.calls.deadline()

    def tick(self, now: float) -> None:
        self.finished(self.calls.tick(now))

    def finished(self, call: FinishedCall | None) -> None:
        if call is None:
            return
        if call.direction == "outgoing":
            self._over.set()
        runtime = self.holder.runtime
        if runtime is None:
            return
        runtime.emit([protocol.CallEvent(event_id=runtime.new_event_id(), direction=call.direction,
                                         number=call.number[:32], at=call.at, duration_s=call.duration_s,
                                         job_id=call.job_id)])
        self.log.info("call %s %s (%.0f s)", call.direction, mask_number(call.number), call.duration_s)

    # -- dial jobs -----------------------------------------------------------------------

    async def dial(self, job: protocol.Dial, report: Reporter) -> None:
        memory = self.journal.memory
        await self._lock.acquire()
        handed_over = False
        try:
            if not self.calls.dial(job.to, job.job_id, time.time()):
                report(job.job_id, protocol.JOB_REJECTED, reason="the modem is busy with another call")
                return
            memory.sends[job.job_id] = {"dial": True, "at": time.time()}
            self.journal.save()
            self._over.clear()
            try:
                await self.session.cmd(f"ATD{job.to};", timeout=max(self.settings.command_timeout, 30.0))
            except CommandError as exc:
                self.calls.hangup(time.time())
                memory.forget_send(job.job_id)
                self.journal.changed()
                report(job.job_id, protocol.JOB_FAILED, reason=f"call not placed: {exc.final.text}")
                self.journal.flush()
                return
            report(job.job_id, protocol.JOB_SENT)
            self.log.info("job %s: calling %s", job.job_id, mask_number(job.to))
            hangup_after = self.settings.hangup_after or job.hangup_after_s
            self.tasks.spawn(self._hang_up_later(job, hangup_after))
            handed_over = True
        finally:
            if not handed_over:
                self._lock.release()

    async def _hang_up_later(self, job: protocol.Dial, after: float) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(after):
                    await self._over.wait()
            if self.calls.state is CallState.OUTGOING:
                with contextlib.suppress(CommandError):
                    await self.session.cmd("ATH")
                self.finished(self.calls.hangup(time.time()))
            self.journal.memory.forget_send(job.job_id)
            self.journal.save()
        finally:
            self._lock.release()

    def recover(self, job: protocol.Dial) -> tuple[str, str | None]:
        if job.job_id in self.journal.memory.sends:
            self.journal.memory.forget_send(job.job_id)
            self.journal.changed()  # carried by the runtime's report
            return protocol.JOB_SENT, "the call was placed before the modem went away"
        return protocol.JOB_REJECTED, "not dialled before the modem went away"
