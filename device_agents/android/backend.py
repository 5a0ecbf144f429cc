"""The Android helper's Backend: an SMS radio seen through Termux:API.

What it can and cannot observe (and so what ``capabilities`` says):

* **Sending**: ``termux-sms-send`` hands the text to Android's SmsManager and
  reports nothing. Android itself writes every message an app sends into the
  SMS provider, as ``outbox``/``queued`` first and then ``sent`` or
  ``failed``. So the backend notes the provider's newest ``_id`` before it
  sends, then watches ``termux-sms-list -t all`` for a newer row to the same
  number with the same text: ``sent`` → job sent, ``failed`` → job failed.
  Nothing there within ``confirm_timeout`` → failed ("no outcome"), never
  retried (it may have gone out). No delivery reports: termux-sms-send passes
  no delivery intent.
* **Receiving**: ``termux-sms-list -t inbox`` polled; a message is new when
  its (``_id``, ``received``) key has not been seen. Keys are kept in a state
  file, so a restart neither repeats nor misses messages. The first run only
  takes note of what is already there.
* **Calls**: ``termux-call-log`` polled the same way (the log has no id: the
  key is date, number, type and duration). A call appears in the log when it
  ends. INCOMING → incoming, OUTGOING → outgoing, MISSED/REJECTED/BLOCKED →
  missed.
* **Status**: ``termux-battery-status``, ``termux-telephony-deviceinfo``
  (SIM state, operator, roaming, technology) and ``termux-telephony-cellinfo``
  (signal level 0-4 of the registered cell, as a percentage).

Events read from the phone get ids derived from what they are
(``sms-<_id>-<time>``, ``call-<hash>``), so that if the agent dies between
putting them in its outbox and noting them as seen, the copies it sends again
carry the same ids and the bridge drops them.

Pure standard library: runs under Termux's Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..common import same_number
from ..runtime import Reporter
from .termux import PhoneClock, TermuxApi, parse_duration

log = logging.getLogger(__name__)

SEEN_MAX = 1000  # keys of inbox messages / calls remembered
SENT_BOXES = {"sent": protocol.JOB_SENT, "failed": protocol.JOB_FAILED}
WAITING_BOXES = frozenset({"outbox", "queued"})
CALL_DIRECTIONS = {"INCOMING": "incoming", "OUTGOING": "outgoing", "MISSED": "missed",
                   "REJECTED": "missed", "BLOCKED": "missed"}
DIAL_MATCH_S = 600.0  # an outgoing call this soon after a dial job belongs to it


def _same_text(a: str | None, b: str | None) -> bool:
    return (a or "").strip() == (b or "").strip()


def _text_hash(job_id: str, text: str | None) -> str:
    """What a pending secret send keeps of its text (matched against the sent box)."""
    return hashlib.sha256(f"{job_id}\0{(text or '').strip()}".encode()).hexdigest()


def _text_matches(row: dict[str, Any], job_id: str, entry: dict[str, Any]) -> bool:
    if "text_sha256" in entry:
        return _text_hash(job_id, row.get("body")) == entry["text_sha256"]
    return _same_text(row.get("body"), entry.get("text"))


def _row_id(row: dict[str, Any]) -> int:
    value = row.get("_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


class _State:
    """Small JSON file: seen keys, pending sends. Written atomically."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"inbox_seen": None, "calls_seen": None, "pending": {}}
        try:
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
            if isinstance(loaded, dict):
                self.data.update(loaded)
        except (OSError, ValueError):
            pass

    def save(self) -> None:
        tmp = self.path + ".tmp"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class TermuxBackend:
    """Backend for :class:`~device_agents.runtime.AgentRuntime` on a phone."""

    def __init__(self, *, api: TermuxApi, state_path: str, clock: PhoneClock,
                 sim_slot: int | None = None, poll_interval: float = 2.0,
                 status_interval: float = 30.0, confirm_timeout: float = 120.0,
                 recover_timeout: float = 30.0) -> None:
        self.api = api
        self.clock = clock
        self.sim_slot = sim_slot
        self.poll_interval = poll_interval
        self.status_interval = status_interval
        self.confirm_timeout = confirm_timeout
        self.recover_timeout = recover_timeout
        self.state = _State(state_path)
        self.capabilities = protocol.Capabilities(sms=True, calls=True, delivery_reports=False,
                                                  multipart=True, dual_sim=False)
        self.emit: Callable[[list[protocol.Event]], bool | None] | None = None
        self._status: protocol.Status | None = None
        self._waiters: dict[str, asyncio.Future[tuple[str, str | None]]] = {}
        self._claimed: set[int] = set()
        self._sent_wake = asyncio.Event()
        self._dials: list[tuple[str, str, float]] = []  # (number, job_id, when)

    # -- wiring --------------------------------------------------------------

    def attach(self, emit: Callable[[list[protocol.Event]], bool | None]) -> None:
        """Where events read from the phone go (``AgentRuntime.try_emit``: False when
        the journal refuses the write, and the phone's messages are then read again)."""
        self.emit = emit

    async def prime(self) -> None:
        """On the very first start, note what the phone already holds (history,
        not news) before the agent connects, so that nothing arriving after
        the connection can be mistaken for history."""
        if self.state.data.get("inbox_seen") is None:
            await self.poll_inbox()
        if self.state.data.get("calls_seen") is None:
            await self.poll_calls()

    async def run(self) -> None:
        """The phone watchers; run beside ``AgentRuntime.run()``."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._loop(self.poll_inbox, self.poll_interval))
            tg.create_task(self._loop(self.poll_calls, self.poll_interval))
            tg.create_task(self._loop(self.refresh_status, self.status_interval))
            tg.create_task(self._sent_watcher())

    async def _loop(self, step: Callable[[], Any], interval: float) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad poll must not stop the watcher
                log.exception("%s failed", getattr(step, "__name__", step))
            await asyncio.sleep(interval)

    # -- sending -------------------------------------------------------------

    async def execute(self, job: protocol.Job, report: Reporter) -> None:
        if isinstance(job, protocol.Dial):
            await self._dial(job, report)
            return
        rows = await self.api.sms_list("all", limit=20)
        if rows is None:
            report(job.job_id, protocol.JOB_REJECTED,
                   reason="Termux:API does not answer (is the Termux:API app installed?)")
            return
        baseline = max((_row_id(r) for r in rows), default=0)
        slot = job.sim if job.sim is not None else self.sim_slot
        pending = self.state.data["pending"]
        pending[job.job_id] = {"to": job.to, "baseline": baseline, "at": time.time()}
        if job.secret:  # no clear copy on disk: its hash finds it in the sent box
            pending[job.job_id]["text_sha256"] = _text_hash(job.job_id, job.text)
        else:
            pending[job.job_id]["text"] = job.text
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[job.job_id] = waiter  # the waiter exists before the send
        # From here on the radio may be touched: a crash now is settled by recover().
        pending[job.job_id]["invoked"] = True
        self.state.save()
        try:
            await self.api.sms_send(job.to, job.text, slot=slot)
            self._sent_wake.set()
            try:
                state, reason = await asyncio.wait_for(waiter, self.confirm_timeout)
            except TimeoutError:
                state, reason = protocol.JOB_FAILED, (
                    f"no sent or failed record in the phone's SMS boxes within "
                    f"{self.confirm_timeout:g} s (SEND_SMS not granted to Termux:API, "
                    f"bad SIM slot, or no network)")
        finally:
            self._waiters.pop(job.job_id, None)
            pending.pop(job.job_id, None)
            self.state.save()
        report(job.job_id, state, reason=reason)

    def _match(self, rows: list[dict[str, Any]], job_id: str,
               entry: dict[str, Any]) -> tuple[str, str | None, int] | None:
        """The outcome of one pending send in these rows, if it is there."""
        for row in sorted(rows, key=_row_id):
            rid = _row_id(row)
            if rid <= entry.get("baseline", 0) or rid in self._claimed:
                continue
            if not (same_number(row.get("address") or row.get("number"), entry["to"])
                    and _text_matches(row, job_id, entry)):
                continue
            box = row.get("type")
            if box in SENT_BOXES:
                reason = "the phone put it in its failed box" if box == "failed" else None
                return SENT_BOXES[box], reason, rid
            if box in WAITING_BOXES:
                return None  # still being sent
        return None

    async def _sent_watcher(self) -> None:
        while True:
            if not self._waiters:
                await self._sent_wake.wait()
            self._sent_wake.clear()
            rows = await self.api.sms_list("all", limit=100)
            if rows is not None:
                pending = self.state.data["pending"]
                for job_id, waiter in sorted(self._waiters.items(),
                                             key=lambda kv: pending.get(kv[0], {}).get("at", 0)):
                    entry = pending.get(job_id)
                    if entry is None or waiter.done():
                        continue
                    found = self._match(rows, job_id, entry)
                    if found is not None:
                        state, reason, rid = found
                        self._claimed.add(rid)
                        waiter.set_result((state, reason))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._sent_wake.wait()

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        """A job found half-sent after a restart: the phone's boxes decide."""
        entry = self.state.data["pending"].get(job.job_id)
        if isinstance(job, protocol.Dial):
            return protocol.JOB_FAILED, "outcome unknown after agent restart"
        if not entry or not entry.get("invoked"):
            return protocol.JOB_REJECTED, "not transmitted before the agent restarted"
        deadline = time.monotonic() + self.recover_timeout
        try:
            while True:
                rows = await self.api.sms_list("all", limit=100)
                found = self._match(rows, job.job_id, entry) if rows is not None else None
                if found is not None:
                    state, reason, rid = found
                    self._claimed.add(rid)
                    return state, reason or "recovered from the phone's SMS boxes after a restart"
                if time.monotonic() >= deadline:
                    return protocol.JOB_FAILED, "outcome unknown after agent restart"
                await asyncio.sleep(self.poll_interval)
        finally:
            self.state.data["pending"].pop(job.job_id, None)
            self.state.save()

    async def _dial(self, job: protocol.Dial, report: Reporter) -> None:
        if await self.api.call(job.to):
            self._dials.append((job.to, job.job_id, time.time()))
            report(job.job_id, protocol.JOB_SENT)
        else:
            report(job.job_id, protocol.JOB_FAILED, reason="termux-telephony-call failed")

    # -- incoming ------------------------------------------------------------

    def _emit(self, events: list[protocol.Event]) -> bool:
        """Whether ``events`` are in the journal (nothing is noted as seen otherwise)."""
        if events and self.emit is not None:
            return self.emit(events) is not False
        return True

    @staticmethod
    def _remember(seen: list[str], keys: list[str]) -> list[str]:
        merged = seen + [k for k in keys if k not in set(seen)]
        return merged[-SEEN_MAX:]

    async def poll_inbox(self) -> None:
        rows = await self.api.sms_list("inbox", limit=50)
        if rows is None:
            return
        keyed = [(f"{_row_id(r)}-{r.get('received', '')}", r) for r in rows if _row_id(r) >= 0]
        seen = self.state.data.get("inbox_seen")
        if seen is None:  # first run: what is already there is history, not news
            self.state.data["inbox_seen"] = [k for k, _ in keyed][-SEEN_MAX:]
            self.state.save()
            return
        known = set(seen)
        fresh = sorted(((k, r) for k, r in keyed if k not in known), key=lambda kr: _row_id(kr[1]))
        if not fresh:
            return
        events: list[protocol.Event] = []
        for _key, row in fresh:
            stamp = "".join(c for c in str(row.get("received", "")) if c.isdigit())
            events.append(protocol.SmsReceived(
                event_id=f"sms-{_row_id(row)}-{stamp}"[:128],
                sender=str(row.get("address") or row.get("number") or "unknown")[:32],
                text=str(row.get("body") or "")[:protocol.MAX_TEXT],
                at=self.clock.to_unix(row.get("received"))))
        if not self._emit(events):  # durable in the journal first…
            return  # the journal refuses writes: read again at the next poll
        self.state.data["inbox_seen"] = self._remember(seen, [k for k, _ in fresh])
        self.state.save()  # …then noted as seen

    async def poll_calls(self) -> None:
        rows = await self.api.call_log(limit=50)
        if rows is None:
            return
        keyed = [("|".join(str(r.get(f, "")) for f in ("date", "phone_number", "type", "duration")), r)
                 for r in rows]
        seen = self.state.data.get("calls_seen")
        if seen is None:
            self.state.data["calls_seen"] = [k for k, _ in keyed][-SEEN_MAX:]
            self.state.save()
            return
        known = set(seen)
        fresh = [(k, r) for k, r in keyed if k not in known]
        if not fresh:
            return
        events: list[protocol.Event] = []
        for key, row in fresh:
            direction = CALL_DIRECTIONS.get(str(row.get("type", "")).upper())
            if direction is None:
                continue  # voicemail and the like: not a call with someone
            number = str(row.get("phone_number") or "").strip() or "private"
            at = self.clock.to_unix(row.get("date"))
            events.append(protocol.CallEvent(
                event_id="call-" + hashlib.sha1(key.encode()).hexdigest()[:20],
                direction=direction, number=number[:32], at=at,
                duration_s=parse_duration(row.get("duration")),
                job_id=self._dial_job_for(number, at) if direction == "outgoing" else None))
        if not self._emit(events):
            return
        self.state.data["calls_seen"] = self._remember(seen, [k for k, _ in fresh])
        self.state.save()

    def _dial_job_for(self, number: str, at: float) -> str | None:
        now = time.time()
        self._dials = [d for d in self._dials if now - d[2] < DIAL_MATCH_S]
        for i, (to, job_id, when) in enumerate(self._dials):
            if same_number(to, number) and at >= when - 60:
                del self._dials[i]
                return job_id
        return None

    # -- status --------------------------------------------------------------

    async def refresh_status(self) -> None:
        battery, info, cells = await asyncio.gather(self.api.battery(), self.api.device_info(),
                                                    self.api.cell_info())
        if battery is None and info is None:
            return
        level = None
        charging = None
        if battery:
            pct = battery.get("percentage")
            if not isinstance(pct, int) and isinstance(battery.get("level"), int) \
                    and isinstance(battery.get("scale"), int) and battery["scale"] > 0:
                pct = round(100 * battery["level"] / battery["scale"])
            level = max(0, min(100, pct)) if isinstance(pct, int) else None
            plugged = battery.get("plugged")
            charging = (plugged != "UNPLUGGED") if isinstance(plugged, str) \
                else battery.get("status") == "CHARGING"
        network = operator = technology = None
        if info:
            sim = str(info.get("sim_state") or "unknown")
            if sim == "absent":
                network = "no-sim"
            elif sim in ("pin_required", "puk_required", "network_locked"):
                network = "sim-locked"
            elif sim != "ready":
                network = f"sim-{sim}"[:32]
            elif not info.get("network_operator"):
                network = "searching"
            elif info.get("network_roaming") is True:
                network = "roaming"
            else:
                network = "registered"
            operator = (info.get("network_operator_name") or None)
            operator = operator[:64] if isinstance(operator, str) else None
            tech = info.get("network_type")
            technology = tech.upper()[:16] if isinstance(tech, str) and tech != "unknown" else None
            phones = info.get("phone_count")
            if isinstance(phones, int) and phones >= 2 and not self.capabilities.dual_sim:
                self.capabilities = protocol.Capabilities(
                    sms=True, calls=True, delivery_reports=False, multipart=True, dual_sim=True)
        signal = None
        for cell in cells or ():
            if isinstance(cell, dict) and cell.get("registered") and isinstance(cell.get("level"), int):
                signal = max(0, min(100, cell["level"] * 25))
                break
        self._status = protocol.Status(at=time.time(), battery=level, charging=charging,
                                       signal=signal, network=network, operator=operator,
                                       technology=technology, timezone=self.clock.name)

    def status(self) -> protocol.Status | None:
        if self._status is None:
            return None
        return dataclasses.replace(self._status, at=time.time())
