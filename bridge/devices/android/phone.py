"""One phone's agent inside the daemon: the :class:`PhoneBackend` of its
:class:`~device_agents.runtime.AgentRuntime`.

The bridge drives the phone itself, over adb, and its events go through the
same device protocol and journal as a modem's, so the store, dispatcher and
webhooks see one device session per phone:

* incoming SMS and calls: :class:`Reader` queries ``content://sms/inbox`` and
  ``content://call_log/calls`` as the shell user whenever the phone is on USB,
  from a remembered :class:`~.content.Position` (durable, per phone); an event
  goes into the journal before the position moves past it, and its id is
  derived from the row, so a crash between the two sends a copy the bridge
  drops, never a loss;
* sending: the phone's route (:mod:`.routes`), under Android's own limit in
  parts (:mod:`.limits`);
* calls: ``am start -a android.intent.action.CALL`` (the shell user holds
  CALL_PHONE, AOSP ``packages/Shell/AndroidManifest.xml``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from device_agents import protocol
from device_agents.modem.gsm7 import segment_count
from device_agents.runtime import Reporter

from .adb import Phone
from .content import (
    CALL_COLUMNS,
    CALLS_URI,
    INBOX_COLUMNS,
    INBOX_URI,
    CallRow,
    Mark,
    Position,
    SmsRow,
    call_event,
    sms_event,
)
from .limits import PartsWindow
from .routes import Route

log = logging.getLogger(__name__)

_DIALABLE = re.compile(r"^\+?[0-9*#]{2,32}$")


class DialError(Exception):
    """The phone could not place the call (unplugged, not set up, refused)."""


async def dial(phone: Phone, number: str) -> None:
    number = number.replace(" ", "")
    if not _DIALABLE.match(number):
        raise DialError("not a dialable number")
    uri = "tel:" + number.replace("#", "%23")
    result = await phone.shell("am", "start", "-a", "android.intent.action.CALL", "-d", uri)
    if not result.ok:
        raise DialError(f"the phone refused the call: {result.text[:200]}")


class Reader:
    """Incoming SMS and calls from the phone's providers, each reported once."""

    def __init__(self, position: Position, emit: Callable[[list[protocol.Event]], bool | None]) -> None:
        self.position = position
        self.emit = emit

    async def prime(self, phone: Phone) -> None:
        """A phone seen for the first time: what it holds already is history, not news."""
        if self.position.inbox is None:
            rows = await phone.query(INBOX_URI, ("_id", "date"))
            self.position.inbox = Mark().after([SmsRow.from_row(r) for r in rows])
        if self.position.calls is None:
            rows = await phone.query(CALLS_URI, ("_id", "date"))
            self.position.calls = Mark().after([CallRow.from_row(r) for r in rows])
        self.position.save()

    async def poll(self, phone: Phone) -> int:
        """Read what is new; the number of events emitted."""
        inbox = self.position.inbox or Mark()
        sms = [SmsRow.from_row(r) for r in await phone.query(INBOX_URI, INBOX_COLUMNS, inbox.where())]
        calls_mark = self.position.calls or Mark()
        calls = [CallRow.from_row(r) for r in await phone.query(CALLS_URI, CALL_COLUMNS, calls_mark.where())]
        events: list[protocol.Event] = [sms_event(r) for r in sms]
        events += [e for e in (call_event(r) for r in calls) if e is not None]
        if events and self.emit(events) is False:  # durable in the journal first…
            return 0  # the journal refuses writes: the position stays, read again next poll
        if sms or calls:
            self.position.inbox = inbox.after(sms)
            self.position.calls = calls_mark.after(calls)
            self.position.save()  # …then the position moves past them
        return len(events)


class PhoneBackend:
    """The device side of one phone's in-daemon agent."""

    def __init__(self, *, route: Route, window: PartsWindow, device_id: str) -> None:
        self.route = route
        self.window = window
        self.capabilities = route.capabilities
        self.phone: Phone | None = None
        self._status: protocol.Status | None = None
        self.log = logging.LoggerAdapter(log, {"device": device_id})

    async def execute(self, job: protocol.Job, report: Reporter) -> None:
        if isinstance(job, protocol.Dial):
            if self.phone is None:
                report(job.job_id, protocol.JOB_REJECTED, reason="phone not on USB")
                return
            try:
                await dial(self.phone, job.to)
            except DialError as exc:
                report(job.job_id, protocol.JOB_FAILED, reason=str(exc))
                return
            report(job.job_id, protocol.JOB_SENT)
            return
        waited = await self.window.take(segment_count(job.text).parts)
        if waited:
            self.log.info("held %s %.1f s under Android's %d-parts-a-minute limit", job.job_id, waited,
                          self.window.max_parts)
        await self.route.send(job, report)

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        return await self.route.recover(job)

    def resume_sent(self, job: protocol.Job, report: Reporter) -> None:
        self.route.resume(job, report)

    async def refresh_status(self, phone: Phone, timezone: str | None) -> None:
        battery = charging = None
        dump = (await phone.shell("dumpsys", "battery")).stdout
        level = re.search(r"^\s*level:\s*(\d+)", dump, re.M)
        if level:
            battery = max(0, min(100, int(level.group(1))))
        powered = re.findall(r"^\s*(?:AC|USB|Wireless) powered:\s*(true|false)", dump, re.M)
        if powered:
            charging = "true" in powered
        operator = (await phone.getprop("gsm.operator.alpha")).split(",")[0].strip() or None
        sim = (await phone.getprop("gsm.sim.state")).split(",")[0].strip().upper()
        network = ("registered" if operator else "searching") if sim in ("READY", "LOADED") else (
            "no-sim" if sim == "ABSENT" else f"sim-{sim.lower()}"[:32] if sim else None)
        self._status = protocol.Status(at=time.time(), battery=battery, charging=charging, signal=None,
                                       network=network, operator=operator[:64] if operator else None,
                                       technology=None, timezone=timezone)

    def status(self) -> protocol.Status | None:
        return self._status
