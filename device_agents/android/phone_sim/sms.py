"""Android's outgoing SMS path as an app meets it: the rate limit, its dialog, the radio.

Sources (AOSP frameworks/opt/telephony, ``src/java/com/android/internal/telephony``):

* ``SmsUsageMonitor.java``: ``DEFAULT_SMS_CHECK_PERIOD = 60000`` ms and
  ``DEFAULT_SMS_MAX_COUNT = 30``, overridden by ``Settings.Global``
  ``sms_outgoing_check_interval_ms`` / ``sms_outgoing_check_max_count`` — read
  once, in the constructor (at boot): a ``settings put`` takes effect after a
  reboot only. ``check(appName, smsWaiting)`` / ``isUnderLimit``: per package,
  timestamps older than the period are dropped; if ``sent + smsWaiting <=
  max`` one timestamp per part is added and the send goes on.
* ``SMSDispatcher.java``: a message over the limit is held behind the
  confirmation dialog ("<app> is sending a large number of SMS messages…",
  ``handleReachSentLimit``); ``MO_MSG_QUEUE_LIMIT = 5`` messages may wait
  there (``denyIfQueueLimitReached``); the next fails at once with
  ``RESULT_ERROR_LIMIT_EXCEEDED``; "Don't allow" fails the held ones with the
  same code. Multipart texts are checked with their number of parts.
  A non-default SMS app's message is written to the provider by the framework
  (outbox → sent / failed; ``status`` 32 pending → 0 complete when a status
  report was asked for and arrives; ``SmsTracker.persistOrUpdateMessage``).
* ``SmsManager.java`` result codes: ``RESULT_ERROR_GENERIC_FAILURE = 1``,
  ``RESULT_ERROR_RADIO_OFF = 2``, ``RESULT_ERROR_NO_SERVICE = 4``,
  ``RESULT_ERROR_LIMIT_EXCEEDED = 5``; ``Activity.RESULT_OK = -1``.
* A status report is only requested when the app passes a delivery intent
  (``SmsManager.sendMultipartTextMessage`` → ``deliveryIntents``); without one,
  nothing ever says "delivered".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device_agents.modem.gsm7 import segment_count, split_text

from .state import (
    SMS_FAILED,
    SMS_OUTBOX,
    SMS_SENT,
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_NONE,
    STATUS_PENDING,
    PhoneState,
)

log = logging.getLogger(__name__)

RESULT_OK = -1
RESULT_ERROR_GENERIC_FAILURE = 1
RESULT_ERROR_RADIO_OFF = 2
RESULT_ERROR_NO_SERVICE = 4
RESULT_ERROR_LIMIT_EXCEEDED = 5
DEFAULT_SMS_CHECK_PERIOD_MS = 60_000
DEFAULT_SMS_MAX_COUNT = 30
MO_MSG_QUEUE_LIMIT = 5


@dataclass
class Radio:
    """How the network answers (set by tests): which numbers fail, which never confirm."""

    fail_numbers: set[str] = field(default_factory=set)
    undeliverable_numbers: set[str] = field(default_factory=set)
    send_delay: float = 0.0
    delivery_delay: float = 0.05
    in_service: bool = True


@dataclass
class SmsRequest:
    app: str
    address: str
    text: str
    sub_id: int
    want_delivery: bool
    on_event: Callable[[str, dict[str, Any]], None]
    parts: list[str] = field(default_factory=list)


class SmsService:
    def __init__(self, state: PhoneState, radio: Radio | None = None) -> None:
        self.state = state
        self.radio = radio or Radio()
        g = state.settings["global"]
        # Read once, as SmsUsageMonitor's constructor does.
        self.max_count = int(g.get("sms_outgoing_check_max_count", DEFAULT_SMS_MAX_COUNT))
        self.period_ms = int(g.get("sms_outgoing_check_interval_ms", DEFAULT_SMS_CHECK_PERIOD_MS))
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self.waiting: list[SmsRequest] = []  # held behind the confirmation dialog
        self._tasks: set[asyncio.Task[None]] = set()

    def _under_limit(self, app: str, parts: int) -> bool:
        now = time.monotonic() * 1000
        sent = self._sent[app]
        while sent and sent[0] < now - self.period_ms:
            sent.popleft()
        if len(sent) + parts <= self.max_count:
            sent.extend([now] * parts)
            return True
        return False

    def send(self, req: SmsRequest) -> None:
        """What ``SmsManager.sendMultipartTextMessage`` sets going; results come via ``on_event``:
        ``("sent", {"part", "parts", "result", "row"})`` per part, ``("delivered", {"part", "status"})``."""
        req.parts = split_text(req.text) if segment_count(req.text).parts > 1 else [req.text]
        if not self._under_limit(req.app, len(req.parts)):
            if len(self.waiting) >= MO_MSG_QUEUE_LIMIT:
                self._fail_all(req, RESULT_ERROR_LIMIT_EXCEEDED)
                return
            self.waiting.append(req)
            self.state.notify("sms_dialog", {"app": req.app, "waiting": len(self.waiting)})
            return
        self._spawn(self._transmit(req))

    def answer_dialog(self, allow: bool) -> int:
        """The user taps Allow / Don't allow on the "large number of SMS messages" dialog."""
        held, self.waiting = self.waiting, []
        for req in held:
            if allow:
                self._spawn(self._transmit(req))
            else:
                self._fail_all(req, RESULT_ERROR_LIMIT_EXCEEDED)
        return len(held)

    def _fail_all(self, req: SmsRequest, code: int) -> None:
        row = self.state.add_sms(box=SMS_FAILED, address=req.address, body=req.text, sub_id=req.sub_id,
                                 creator=req.app)
        for i in range(len(req.parts)):
            req.on_event("sent", {"part": i, "parts": len(req.parts), "result": code, "row": row["_id"]})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transmit(self, req: SmsRequest) -> None:
        row = self.state.add_sms(box=SMS_OUTBOX, address=req.address, body=req.text, sub_id=req.sub_id,
                                 creator=req.app,
                                 status=STATUS_PENDING if req.want_delivery else STATUS_NONE)
        if self.radio.send_delay:
            await asyncio.sleep(self.radio.send_delay)
        if not self.radio.in_service:
            code = RESULT_ERROR_NO_SERVICE
        elif req.address in self.radio.fail_numbers:
            code = RESULT_ERROR_GENERIC_FAILURE
        else:
            code = RESULT_OK
        self.state.log_radio({"kind": "sms", "app": req.app, "address": req.address, "text": req.text,
                              "parts": len(req.parts), "sub_id": req.sub_id,
                              "transmitted": code == RESULT_OK,
                              "status_report_requested": req.want_delivery})
        now_ms = int(time.time() * 1000)
        self.state.update_sms(row["_id"], type=SMS_SENT if code == RESULT_OK else SMS_FAILED,
                              date_sent=now_ms if code == RESULT_OK else 0,
                              status=row["status"] if code == RESULT_OK else STATUS_NONE)
        for i in range(len(req.parts)):
            req.on_event("sent", {"part": i, "parts": len(req.parts), "result": code, "row": row["_id"]})
        if code != RESULT_OK or not req.want_delivery:
            return
        if req.address in self.radio.undeliverable_numbers:
            await asyncio.sleep(self.radio.delivery_delay)
            self.state.update_sms(row["_id"], status=STATUS_FAILED)
            for i in range(len(req.parts)):
                req.on_event("delivered", {"part": i, "parts": len(req.parts), "status": STATUS_FAILED})
            return
        await asyncio.sleep(self.radio.delivery_delay)
        self.state.update_sms(row["_id"], status=STATUS_COMPLETE)
        for i in range(len(req.parts)):
            req.on_event("delivered", {"part": i, "parts": len(req.parts), "status": STATUS_COMPLETE})
