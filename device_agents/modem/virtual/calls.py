"""Voice calls: the call state as data, RING/+CLIP to the DTE, ATD/ATA/ATH.

TS 27.007 §6.6-6.9 (D, A, H, +CHUP), §7.6 (+CLIP), §6.11 (+CRC), §7.18 (+CLCC).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import asdict, dataclass
from typing import Final

from .core import ModemCore, now_iso, toa
from .errors import Reply, cme
from .records import CallRecord
from .state import int_args


class CallState(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"  # incoming, alerting the DTE with RING
    DIALLING = "dialling"  # outgoing, the far end has not answered yet
    ACTIVE = "active"


CALL_TRANSITIONS: Final[dict[CallState, dict[str, CallState]]] = {
    CallState.IDLE: {"incoming": CallState.RINGING, "dial": CallState.DIALLING},
    CallState.RINGING: {
        "answer": CallState.ACTIVE,  # ATA
        "hangup": CallState.IDLE,  # ATH / AT+CHUP: rejected
        "remote-hangup": CallState.IDLE,  # the caller gave up: missed
    },
    CallState.DIALLING: {
        "remote-answer": CallState.ACTIVE,
        "hangup": CallState.IDLE,
        "remote-hangup": CallState.IDLE,
    },
    CallState.ACTIVE: {"hangup": CallState.IDLE, "remote-hangup": CallState.IDLE},
}


@dataclass(slots=True)
class ActiveCall:
    direction: str
    number: str
    started: float
    answered_at: float | None = None
    duration: float | None = None  # incoming: how long the caller talks once answered
    missed: bool = False
    rings: int = 0
    timer: asyncio.TimerHandle | None = None


class CallCommands(ModemCore):
    """The network's side of calls and the DTE's commands for them."""

    def _call_event(self, trigger: str) -> None:
        self.call_state = CALL_TRANSITIONS[self.call_state][trigger]

    def _incoming_call(self, sender: str, missed: bool, duration: float | None) -> None:
        if "incoming" not in CALL_TRANSITIONS[self.call_state] or not self._registered():
            # busy or unreachable: the caller gets voicemail; log it as missed
            self.calls.append(CallRecord("in", sender, now_iso(), False, 0.0))
            self._log_radio(asdict(self.calls[-1]))
            return
        self._call_event("incoming")
        self._call = ActiveCall("in", sender, time.monotonic(), duration=duration, missed=missed)
        self._ring()

    def _ring(self) -> None:
        call = self._call
        if call is None or self.call_state is not CallState.RINGING:
            return
        limit = self.missed_rings if call.missed else self.max_rings
        if call.rings >= limit:
            self._remote_hangup()
            return
        call.rings += 1
        lines = ["+CRING: VOICE" if self.settings.crc else "RING"]
        if self.settings.clip:
            lines.append(f'+CLIP: "{call.number}",{toa(call.number)},"",0,"",0')
        for line in lines:
            self._urc(line)
        call.timer = self._later(self.ring_interval, self._ring)

    def _remote_hangup(self) -> None:
        if self._call is None:
            return
        self._call_event("remote-hangup")
        # Recorded (and in the radio log) before anyone can see the NO CARRIER.
        self._end_call(answered=self._call.answered_at is not None)
        self._urc("NO CARRIER")

    def _remote_answer(self) -> None:
        if self._call is not None and self.call_state is CallState.DIALLING:
            self._call_event("remote-answer")
            self._call.answered_at = time.monotonic()

    def _end_call(self, *, answered: bool) -> None:
        call, self._call = self._call, None
        self.call_state = CallState.IDLE
        if call is None:
            return
        self._cancel_timer(call.timer)
        duration = time.monotonic() - call.answered_at if call.answered_at else 0.0
        record = CallRecord(call.direction, call.number, now_iso(), answered, round(duration, 3))
        self.calls.append(record)
        self._log_radio(asdict(record))

    # -- commands ------------------------------------------------------------------------

    def _at_d(self, rest: str) -> Reply:
        self._need_sim()
        number = rest.strip()
        if not number.endswith(";"):
            return Reply(final="NO CARRIER")  # data calls are not simulated
        number = number[:-1].strip().strip('"')
        if not number or "dial" not in CALL_TRANSITIONS[self.call_state]:
            raise cme(3)
        self._call_event("dial")
        self._call = ActiveCall("out", number, time.monotonic())
        self._call.timer = self._later(self.answer_delay, self._remote_answer)
        return Reply()

    def _at_a(self, rest: str) -> Reply:
        if self.call_state is not CallState.RINGING or self._call is None:
            return Reply(final="NO CARRIER")
        self._call_event("answer")
        call = self._call
        self._cancel_timer(call.timer)
        call.answered_at = time.monotonic()
        if call.duration is not None:
            call.timer = self._later(call.duration, self._remote_hangup)
        return Reply()

    def _at_h(self, rest: str) -> None:
        if self._call is not None:
            self._call_event("hangup")
            self._end_call(answered=self._call.answered_at is not None)

    def _at_clip(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f"+CLIP: {self.settings.clip},1"])
        if rest == "=?":
            return Reply(["+CLIP: (0,1)"])
        self.settings.clip = int_args(rest[1:], count=1)[0] if rest.startswith("=") else 0
        return None

    def _at_crc(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f"+CRC: {self.settings.crc}"])
        if rest.startswith("=") and rest != "=?":
            self.settings.crc = int_args(rest[1:], count=1)[0]
        return None

    def _at_clcc(self, rest: str) -> Reply | None:
        call = self._call
        if rest == "=?" or call is None:
            return None
        stat = {CallState.ACTIVE: 0, CallState.DIALLING: 2, CallState.RINGING: 4}[self.call_state]
        direction = 0 if call.direction == "out" else 1
        return Reply([f'+CLCC: 1,{direction},{stat},0,0,"{call.number}",{toa(call.number)}'])
