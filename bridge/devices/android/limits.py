"""Android's own send limit, counted the way Android counts it.

AOSP ``frameworks/opt/telephony/src/java/com/android/internal/telephony/
SmsUsageMonitor.java``: each app (by package name) may send
``DEFAULT_SMS_MAX_COUNT = 30`` SMS in ``DEFAULT_SMS_CHECK_PERIOD = 60000`` ms;
``isUnderLimit`` counts every *part* of a multipart message as one. Over it,
``SMSDispatcher`` asks the phone's owner in a dialog and holds the message,
with at most ``MO_MSG_QUEUE_LIMIT = 5`` waiting behind that dialog; the 6th
fails with ``RESULT_ERROR_LIMIT_EXCEEDED``. Nobody looks at a gateway phone,
so the bridge never lets a phone reach the dialog: before a message goes out
it waits until its parts fit in the window.

Both numbers come from secure settings that ``SmsUsageMonitor`` reads once,
in its constructor, when the phone process starts:
``sms_outgoing_check_max_count`` and ``sms_outgoing_check_interval_ms``
(``Settings.Global``). ``settings put global sms_outgoing_check_max_count
N`` over adb takes effect after the phone restarts; the device options
``sms_max_count`` and ``sms_check_interval`` (seconds) tell the bridge what the
phone was set to.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

ANDROID_MAX_COUNT = 30  # SmsUsageMonitor.DEFAULT_SMS_MAX_COUNT, parts
ANDROID_CHECK_PERIOD_S = 60.0  # SmsUsageMonitor.DEFAULT_SMS_CHECK_PERIOD, 60000 ms
ANDROID_QUEUE_LIMIT = 5  # SMSDispatcher.MO_MSG_QUEUE_LIMIT, behind the confirmation dialog
# The phone stamps a send when SMSDispatcher takes it, a little after the bridge
# hands it over: keep a margin on the period so the two clocks never disagree.
MARGIN_S = 2.0


class PartsWindow:
    """At most ``max_parts`` parts in any ``period`` seconds (plus a margin)."""

    def __init__(self, max_parts: int = ANDROID_MAX_COUNT, period: float = ANDROID_CHECK_PERIOD_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_parts < 1:
            raise ValueError("max_parts must be at least 1")
        self.max_parts = max_parts
        self.period = period + MARGIN_S
        self.clock = clock
        self._stamps: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    def _trim(self, now: float) -> None:
        while self._stamps and self._stamps[0] <= now - self.period:
            self._stamps.popleft()

    def wait_time(self, parts: int) -> float:
        """Seconds until ``parts`` more fit (0: now)."""
        parts = min(parts, self.max_parts)  # a message longer than the limit goes alone
        now = self.clock()
        self._trim(now)
        over = len(self._stamps) + parts - self.max_parts
        if over <= 0:
            return 0.0
        return max(0.0, self._stamps[over - 1] + self.period - now)

    async def take(self, parts: int) -> float:
        """Wait until ``parts`` fit, then count them; the seconds waited."""
        waited = 0.0
        async with self._lock:
            while (delay := self.wait_time(parts)) > 0:
                waited += delay
                await asyncio.sleep(delay)
            now = self.clock()
            self._stamps.extend([now] * parts)
        return waited
