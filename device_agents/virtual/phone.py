"""A virtual phone: a real agent with a simulated radio.

It speaks the device protocol over a real websocket like every agent; only
the radio is pretend. Everything it "transmits" is appended to its radio log
(``virtual-<device id>-radio.jsonl`` beside the store), one JSON object a
line, so that a test can prove that nothing was ever sent twice.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from .. import protocol
from ..modem.gsm7 import segment_count
from ..runtime import Reporter
from ..tasks import TaskSet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RadioSettings:
    latency: float = 0.2  # seconds from "begin" to "sent"
    jitter: float = 0.1  # random extra latency, up to this many seconds
    delivery_delay: float = 0.5  # seconds from "sent" to the delivery report
    failure_rate: float = 0.0  # chance that a send fails at the network
    fail_prefixes: tuple[str, ...] = ()  # numbers that always fail (e.g. "+33699")
    delivery_reports: bool = True
    battery: int = 87
    signal: int = 75
    # For benchmarks (bench.idle --changing-status), not a model of a radio: each reading's
    # signal alternates between ``signal`` and ``signal`` minus this, so that every status
    # differs from the last and its agent sends each one (0: steady).
    signal_wander: int = 0
    operator: str = "Virtual Mobile"
    # One transmission at a time per SIM, each part taking latency + jitter:
    # Android's SMSDispatcher hands the RIL one part and waits for its
    # RIL_REQUEST_SEND_SMS answer before the next (frameworks/opt/telephony,
    # SMSDispatcher.java, sendSms / EVENT_SEND_SMS_COMPLETE). Off: every job
    # pushed is "transmitted" at once, whatever its length (the old, kind model).
    serial: bool = False
    # The phone's own cap: parts per minute per app, beyond which Android asks
    # its owner and, unattended, refuses (SmsUsageMonitor.java:
    # DEFAULT_SMS_MAX_COUNT = 30, DEFAULT_SMS_CHECK_PERIOD = 60 s, checked with
    # the message's part count in SMSDispatcher). 0 = no cap.
    cap_per_minute: int = 0


class VirtualRadio:
    """The Backend of a virtual phone."""

    def __init__(self, *, device_id: str, radio_log: str | os.PathLike[str],
                 settings: RadioSettings = RadioSettings(), seed: int | None = None) -> None:
        self.device_id = device_id
        self.settings = settings
        self.radio_log = os.fspath(radio_log)
        os.makedirs(os.path.dirname(os.path.abspath(self.radio_log)), exist_ok=True)
        self._log_file = open(self.radio_log, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._random = random.Random(seed)
        self._readings = 0  # statuses read (signal_wander)
        self.capabilities = protocol.Capabilities(sms=True, calls=True,
                                                  delivery_reports=settings.delivery_reports,
                                                  multipart=True)
        self._later = TaskSet()  # delivery reports still due
        self._radio = asyncio.Lock()  # one transmission at a time (``serial``)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (at, parts), last 60 s

    def _transmit(self, record: dict[str, Any]) -> None:
        self._log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._log_file.flush()

    async def _radio_wait(self, parts: int = 1) -> None:
        delay = sum(self.settings.latency + self._random.random() * self.settings.jitter for _ in range(parts))
        if delay > 0:
            await asyncio.sleep(delay)

    def _over_cap(self, parts: int, now: float) -> bool:
        """Whether ``parts`` more would pass the phone's own cap (SmsUsageMonitor's
        sliding window); counted when they pass."""
        cap = self.settings.cap_per_minute
        if cap <= 0:
            return False
        while self._recent and self._recent[0][0] <= now - 60.0:
            self._recent.popleft()
        if sum(p for _, p in self._recent) + parts > cap:
            return True
        self._recent.append((now, parts))
        return False

    async def execute(self, job: protocol.Job, report: Reporter) -> None:
        if isinstance(job, protocol.SendSms):
            # Android counts the parts when the app asks to send (SMSDispatcher.sendText →
            # checkDestination → SmsUsageMonitor.check), before the radio is free.
            asked = time.time()
            parts = segment_count(job.text).parts
            if self._over_cap(parts, asked):
                report(job.job_id, protocol.JOB_FAILED,
                       reason=f"RESULT_ERROR_LIMIT_EXCEEDED: over {self.settings.cap_per_minute} parts a minute")
                return
            if self.settings.serial:
                async with self._radio:
                    await self._radio_wait(parts)
                    self._send(job, report, parts, asked)
            else:
                await self._radio_wait()
                self._send(job, report, parts, asked)
            return
        await self._radio_wait()
        self._transmit({"kind": "dial", "job_id": job.job_id, "to": job.to, "at": time.time()})
        report(job.job_id, protocol.JOB_SENT)

    def _send(self, job: protocol.SendSms, report: Reporter, parts: int, asked: float) -> None:
        fails = (job.to.startswith(self.settings.fail_prefixes) if self.settings.fail_prefixes else False) \
            or (self.settings.failure_rate > 0 and self._random.random() < self.settings.failure_rate)
        if fails:
            report(job.job_id, protocol.JOB_FAILED, reason="network refused the message (simulated)")
            return
        self._transmit({"id_sms_api": job.reference, "job_id": job.job_id, "to": job.to,
                        "text": job.text, "parts": parts, "asked": asked, "at": time.time()})
        report(job.job_id, protocol.JOB_SENT, parts=parts)
        if self.settings.delivery_reports and job.report:
            if self.settings.delivery_delay <= 0:
                report(job.job_id, protocol.JOB_DELIVERED)
            else:
                self._later.spawn(self._deliver_later(job.job_id, report))

    def resume_sent(self, job: protocol.Job, report: Reporter) -> None:
        """After a restart: a sent SMS whose report was still due gets it."""
        if isinstance(job, protocol.SendSms) and job.report and self.settings.delivery_reports:
            self._later.spawn(self._deliver_later(job.job_id, report))

    async def _deliver_later(self, job_id: str, report: Reporter) -> None:
        await asyncio.sleep(self.settings.delivery_delay)
        report(job_id, protocol.JOB_DELIVERED)

    async def recover(self, job: protocol.Job) -> tuple[str, str | None]:
        """The radio log is this device's truth: sent if it is there, else
        the radio was never touched and the bridge may dispatch it again."""
        self._log_file.flush()
        if await asyncio.to_thread(self._in_radio_log, job.job_id):
            return protocol.JOB_SENT, "recovered from the radio log after a restart"
        return protocol.JOB_REJECTED, "not transmitted before the agent restarted"

    def _in_radio_log(self, job_id: str) -> bool:
        with open(self.radio_log, encoding="utf-8") as f:
            for line in f:
                try:
                    if json.loads(line).get("job_id") == job_id:
                        return True
                except ValueError:
                    continue
        return False

    def status(self) -> protocol.Status:
        signal = self.settings.signal
        if self.settings.signal_wander:
            self._readings += 1
            signal = max(0, signal - self.settings.signal_wander * (self._readings % 2))
        return protocol.Status(at=time.time(), battery=self.settings.battery, charging=True,
                               signal=signal, network="registered",
                               operator=self.settings.operator, technology="LTE")

    def close(self) -> None:
        self._later.cancel()
        self._log_file.close()
