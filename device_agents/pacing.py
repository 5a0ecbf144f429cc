"""The caps an agent keeps itself: SMS parts per sliding minute, hour and day.

The bridge tells an agent its device's caps in the welcome
(:class:`~device_agents.protocol.Caps`). The agent counts a send once it has
asked its device to send it (the backend's first step has run); the phone
counts it as the request reaches it (Android's ``SmsUsageMonitor.check``,
called from ``SMSDispatcher`` as the app asks, with the message's part count):
the virtual phone in that first step, so never after the agent. Both on the
device's own clock (``time.time()``, as ``SmsUsageMonitor`` reads
``System.currentTimeMillis()``). The phone's clock
is then the truth of the windows: the bridge may push a job a little before
the slot (it counts from when the frame left), and the agent holds it until
the slot comes.

Pure: every call is given the time.
"""

from __future__ import annotations

import collections

from . import protocol

SPANS = (("per_minute", 60.0), ("per_hour", 3600.0), ("per_day", 86400.0))


class CapWindow:
    """At most ``cap`` parts in any ``span`` seconds (a sliding window, as
    Android's ``SmsUsageMonitor`` and carriers count), cap 0 = none. Holds one
    entry per send still inside the span: bounded by the cap. The bridge keeps
    its own count of a device's sends in these too (``bridge.dispatch.session``)."""

    def __init__(self, span: float, cap: int) -> None:
        self.span = span
        self.cap = cap
        self._sent: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0][0] <= now - self.span:
            self._total -= self._sent.popleft()[1]

    def room(self, now: float) -> int:
        """Parts that fit now."""
        if self.cap <= 0:
            return 1 << 30
        self._trim(now)
        return max(0, self.cap - self._total)

    def record(self, now: float, parts: int) -> None:
        if self.cap > 0:  # bounded by the cap (a cap given later counts from then on)
            self._sent.append((now, parts))
            self._total += parts

    def free_at(self, now: float, parts: int) -> float:
        """When ``parts`` more fit (``now`` if they do already)."""
        self._trim(now)
        if self.cap <= 0 or self._total + parts <= self.cap:
            return now
        over = self._total + parts - self.cap  # this many parts must leave the window first
        for at, count in self._sent:
            over -= count
            if over <= 0:
                return at + self.span
        return now  # unreachable for parts <= cap (``CapPacer.fits_ever`` checks)


class CapPacer:
    """The caps of one device, counted in parts as the phone counts them."""

    def __init__(self, caps: protocol.Caps | None = None) -> None:
        self.windows = [CapWindow(span, 0) for _name, span in SPANS]
        self.configure(caps)

    def configure(self, caps: protocol.Caps | None) -> None:
        """New caps (None: none), keeping the sends already counted."""
        for window, (name, _span) in zip(self.windows, SPANS, strict=True):
            window.cap = getattr(caps, name) if caps is not None else 0

    @property
    def capped(self) -> bool:
        """Whether any cap is kept (else nothing is counted, and no job waits)."""
        return any(w.cap > 0 for w in self.windows)

    def fits_ever(self, parts: int) -> bool:
        """Whether ``parts`` are within every cap (else they never fit)."""
        return all(w.cap <= 0 or parts <= w.cap for w in self.windows)

    def free_at(self, now: float, parts: int) -> float:
        """When ``parts`` more fit in every window (``now`` if they do)."""
        return max(w.free_at(now, parts) for w in self.windows)

    def recent(self, now: float, limit: int = protocol.MAX_SENT) -> tuple[tuple[float, int], ...]:
        """The sends inside the longest capped window, as (seconds ago, parts), oldest first,
        the most recent ``limit`` (what a hello tells the bridge: ``Hello.sent``)."""
        capped = [w for w in self.windows if w.cap > 0]
        if not capped:
            return ()
        longest = max(capped, key=lambda w: w.span)
        longest._trim(now)
        kept = list(longest._sent)[-limit:]
        return tuple((round(max(0.0, now - at), 3), parts) for at, parts in kept)

    def record(self, now: float, parts: int) -> None:
        """A send of ``parts`` asked of the device at ``now``."""
        if parts > 0:
            for window in self.windows:
                window.record(now, parts)
