"""The modem agent's view of voice calls, without I/O: URCs and clock in,
finished calls out.

A gateway modem never answers: an incoming call rings (``RING`` /
``+CRING``, with the caller in ``+CLIP``) until the caller gives up — the
modem says ``NO CARRIER``, or simply stops ringing (no RING for
``ring_gap`` seconds) — and is reported once, as ``missed``. Should the call
be answered anyway (auto-answer, ``ATS0``), it is reported as ``incoming``
with its duration when it ends. An outgoing call (a ``dial`` job) is
reported as ``outgoing`` when the agent hangs up or the far end does.

The state machine is data (:data:`CALL_TRANSITIONS`), h11-style.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class CallState(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"  # incoming, not answered
    ANSWERED = "answered"  # incoming, answered
    OUTGOING = "outgoing"  # placed by a dial job


CALL_TRANSITIONS: Final[dict[CallState, dict[str, CallState]]] = {
    CallState.IDLE: {"ring": CallState.RINGING, "dial": CallState.OUTGOING},
    CallState.RINGING: {"ring": CallState.RINGING, "clip": CallState.RINGING, "answered": CallState.ANSWERED,
                        "ended": CallState.IDLE, "ring-timeout": CallState.IDLE},
    CallState.ANSWERED: {"ended": CallState.IDLE, "hangup": CallState.IDLE},
    CallState.OUTGOING: {"ended": CallState.IDLE, "hangup": CallState.IDLE, "ring": CallState.OUTGOING,
                         "clip": CallState.OUTGOING},
}


@dataclass(frozen=True, slots=True)
class FinishedCall:
    direction: str  # "missed" | "incoming" | "outgoing"
    number: str
    at: float  # when it started (Unix seconds)
    duration_s: float = 0.0
    job_id: str | None = None


class CallTracker:
    def __init__(self, *, ring_gap: float = 8.0) -> None:
        self.ring_gap = ring_gap
        self.state = CallState.IDLE
        self.number = ""
        self.started = 0.0
        self.last_ring = 0.0
        self.answered_at: float | None = None
        self.job_id: str | None = None

    def _go(self, trigger: str) -> bool:
        nxt = CALL_TRANSITIONS[self.state].get(trigger)
        if nxt is None:
            return False
        self.state = nxt
        return True

    def _finish(self, now: float) -> FinishedCall | None:
        state, self.state = self.state, CallState.IDLE
        if state is CallState.RINGING:
            call = FinishedCall("missed", self.number or "unknown", self.started)
        elif state is CallState.ANSWERED:
            call = FinishedCall("incoming", self.number or "unknown", self.started,
                                round(now - (self.answered_at or now), 3))
        elif state is CallState.OUTGOING:
            call = FinishedCall("outgoing", self.number, self.started, round(now - self.started, 3),
                                self.job_id)
        else:
            return None
        self.number, self.answered_at, self.job_id = "", None, None
        return call

    # -- what the modem says ----------------------------------------------------------

    def ring(self, now: float) -> None:
        if self.state is CallState.IDLE:
            self.started, self.number = now, ""
        if self._go("ring"):
            self.last_ring = now

    def clip(self, number: str, now: float) -> None:
        if self.state is CallState.IDLE:
            self.ring(now)
        if self.state is CallState.RINGING and number:
            self.number = number

    def answered(self, now: float) -> None:
        if self._go("answered"):
            self.answered_at = now

    def ended(self, now: float) -> FinishedCall | None:
        """NO CARRIER / BUSY / NO ANSWER outside a command: the other side hung up."""
        if "ended" not in CALL_TRANSITIONS[self.state]:
            return None
        return self._finish(now)

    def tick(self, now: float) -> FinishedCall | None:
        """Ringing that stopped without NO CARRIER: the caller gave up."""
        if self.state is CallState.RINGING and now - self.last_ring > self.ring_gap:
            return self._finish(now)
        return None

    # -- what the agent does ------------------------------------------------------------

    def dial(self, number: str, job_id: str, now: float) -> bool:
        if not self._go("dial"):
            return False
        self.number, self.job_id, self.started = number, job_id, now
        return True

    def hangup(self, now: float) -> FinishedCall | None:
        if "hangup" not in CALL_TRANSITIONS[self.state]:
            return None
        return self._finish(now)

    def deadline(self) -> float | None:
        """When :meth:`tick` may next have something to say."""
        return self.last_ring + self.ring_gap if self.state is CallState.RINGING else None
