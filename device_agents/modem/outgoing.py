"""Outgoing SMS: parts written with AT+CMGS, their references kept, and
status reports matched back to their jobs.

The durable memory says, per job, which parts the modem confirmed (their
TP-MR) and which part was being attempted; it is written before the radio
is touched and again once the modem answered, so a crash or an unplug
between the two knows that part's fate is uncertain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .. import protocol
from ..common import mask_number
from ..runtime import Reporter
from ..tasks import TaskSet
from . import pdu
from .at import ResultKind, parse_args
from .durable import ModemJournal, ref_key
from .incoming import RuntimeHolder
from .serial_link import CommandError, CommandTimeout
from .session import ModemSession
from .settings import ModemSettings

UNMATCHED_REPORT_S = 120.0  # a status report may beat the +CMGS reply it answers
# Errors after which nothing was transmitted and another try later (or another
# device) may well succeed: the job is handed back (rejected), not failed.
TRANSIENT_CMS = frozenset({314, 331, 332, 500})
TRANSIENT_CME = frozenset({14, 30, 31, 515})


class SendFailed(Exception):
    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class Outgoing:
    def __init__(self, *, session: ModemSession, journal: ModemJournal, holder: RuntimeHolder,
                 settings: ModemSettings, tasks: TaskSet, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.session = session
        self.journal = journal
        self.memory = journal.memory
        self.holder = holder
        self.settings = settings
        self.tasks = tasks
        self.log = log
        self._unmatched: list[tuple[float, pdu.StatusReport]] = []

    # -- sending -------------------------------------------------------------------------

    async def send(self, job: protocol.SendSms, report: Reporter) -> None:
        """Raises LinkLost when the modem went away mid-job (recover() finishes it)."""
        try:
            mrs = await self.transmit(job)
        except SendFailed as exc:
            self.memory.forget_send(job.job_id)
            self.journal.changed()
            state = protocol.JOB_REJECTED if exc.transient else protocol.JOB_FAILED
            self.log.info("job %s: %s: %s", job.job_id, state, exc.reason)
            report(job.job_id, state, reason=exc.reason)
            self.journal.flush()
            return
        self._sent(job, mrs, report)

    def _sent(self, job: protocol.SendSms, mrs: list[int], report: Reporter) -> None:
        send = self.memory.sends.get(job.job_id)
        if send is not None:
            if send.get("report"):
                send["sent"] = True
            else:
                self.memory.forget_send(job.job_id)
            self.journal.changed()  # carried by the "sent" below
        report(job.job_id, protocol.JOB_SENT, parts=len(mrs), network_ref=",".join(map(str, mrs))[:128])
        self.journal.flush()
        self.log.info("job %s: sent to %s in %d part(s)", job.job_id, mask_number(job.to), len(mrs))
        if send is not None and send.get("report"):
            self.settle(job.job_id)

    async def transmit(self, job: protocol.SendSms) -> list[int]:
        """Send every part the modem has not confirmed yet; the TP-MR of each."""
        memory = self.memory
        send = memory.sends.get(job.job_id)
        if send is None:
            send = {"to": job.to, "ref": memory.next_concat_ref(), "mrs": {}, "attempt": None,
                    "report": bool(job.report and self.settings.delivery_reports), "at": time.time()}
        try:
            parts = pdu.encode_submit(job.to, job.text, smsc=self.settings.smsc, request_report=send["report"],
                                      concat_ref=send["ref"])
        except ValueError as exc:
            raise SendFailed(f"cannot encode the message: {exc}") from None
        send["total"] = len(parts)
        memory.sends[job.job_id] = send
        for part in parts:
            if str(part.seq) in send["mrs"]:
                continue
            send["attempt"] = part.seq
            self.journal.save()  # before the radio is touched: the part's fate is uncertain from here
            timeouts = 0
            while True:
                try:
                    reply = await self.session.cmd(f"AT+CMGS={part.tpdu_length}", pdu=part.hex,
                                                   timeout=self.settings.send_timeout)
                    break
                except CommandTimeout as exc:
                    timeouts += 1
                    if timeouts >= 2:
                        raise SendFailed(f"the modem did not confirm part {part.seq}/{part.total}",
                                         transient=part.seq == 1 and not exc.uncertain) from None
                    self.log.warning("job %s: part %d/%d unconfirmed; sending it again",
                                     job.job_id, part.seq, part.total)
                except CommandError as exc:
                    code = exc.final.code
                    transient = part.seq == 1 and (
                        (exc.final.kind is ResultKind.CMS and code in TRANSIENT_CMS)
                        or (exc.final.kind is ResultKind.CME and code in TRANSIENT_CME))
                    sent = f" ({part.seq - 1} part(s) sent)" if part.seq > 1 else ""
                    raise SendFailed(f"modem refused part {part.seq}/{part.total}: {exc.final.text}{sent}",
                                     transient=transient) from None
            lines = reply.info("+CMGS:")
            args = parse_args(lines[0]) if lines else ()
            mr = int(args[0]) if args and args[0].isdigit() else -1
            if mr < 0:  # OK without +CMGS: sent, but no status report can be matched to it
                self.log.warning("job %s: no message reference for part %d", job.job_id, part.seq)
            send["mrs"][str(part.seq)] = mr
            send["attempt"] = None
            if send["report"] and mr >= 0:  # without a reference the job stays "sent"
                memory.refs[ref_key(mr, job.to)] = [job.job_id, part.seq]
            self.journal.save()
            if send["report"] and mr >= 0:
                self._match_early_reports(ref_key(mr, job.to))
        return [send["mrs"][str(s)] for s in range(1, len(parts) + 1)]

    async def recover(self, job: protocol.SendSms) -> tuple[str, str | None]:
        """A job left ``sending`` by a crash or an unplug, now that the modem is back."""
        send = self.memory.sends.get(job.job_id)
        if send is None or (not send.get("mrs") and send.get("attempt") is None):
            return protocol.JOB_REJECTED, "not transmitted before the modem went away"
        if send.get("sent") or len(send.get("mrs", {})) >= send.get("total", 1) and send.get("attempt") is None:
            self._after_recovery(job.job_id, send)
            return protocol.JOB_SENT, "transmitted before the modem went away"
        # Some parts confirmed, one maybe: send the rest now. A part whose
        # +CMGS never came is sent again (at-least-once: handsets drop a
        # repeated part of a concatenated SMS).
        try:
            mrs = await self.transmit(job)
        except SendFailed as exc:
            self.memory.forget_send(job.job_id)
            self.journal.changed()
            return protocol.JOB_FAILED, exc.reason
        send = self.memory.sends.get(job.job_id)
        if send is not None:
            self._after_recovery(job.job_id, send)
        return protocol.JOB_SENT, f"completed after the modem came back ({len(mrs)} part(s))"

    def _after_recovery(self, job_id: str, send: dict[str, Any]) -> None:
        if send.get("report"):
            send["sent"] = True
            self.tasks.spawn(self._settle_soon(job_id))
        else:
            self.memory.forget_send(job_id)
        self.journal.changed()  # carried by the runtime's report of the recovered state

    async def _settle_soon(self, job_id: str) -> None:
        await asyncio.sleep(0)  # after the runtime recorded "sent"
        self.settle(job_id)

    # -- status reports ------------------------------------------------------------------

    def status_report(self, report: pdu.StatusReport) -> None:
        if report.status == "pending":
            return  # the SMSC is still trying: a final report follows
        key = ref_key(report.reference, report.recipient)
        hit = self.memory.refs.pop(key, None)
        if hit is None:
            now = time.monotonic()
            self._unmatched = [(t, r) for t, r in self._unmatched if now - t < UNMATCHED_REPORT_S]
            self._unmatched.append((now, report))
            self.log.debug("status report for unknown reference %d", report.reference)
            return
        job_id, seq = hit
        send = self.memory.sends.get(job_id)
        if send is not None:
            send.setdefault("outcome", {})[str(seq)] = [report.status, report.status_code]
            self.settle(job_id)
        self.journal.save()

    def settle(self, job_id: str) -> None:
        """Report delivered / failed once every part has its outcome (and the
        job was reported sent)."""
        send = self.memory.sends.get(job_id)
        runtime = self.holder.runtime
        if send is None or not send.get("sent") or runtime is None:
            return
        outcome = send.get("outcome", {})
        failed = sorted((int(s), code) for s, (status, code) in outcome.items() if status == "failed")
        if not failed and len(outcome) < send["total"]:
            return  # parts still awaiting their reports
        self.memory.forget_send(job_id)
        self.journal.changed()  # carried by the report below
        if failed:
            seq, code = failed[0]
            part = f"part {seq}/{send['total']} " if send["total"] > 1 else ""
            runtime.report(job_id, protocol.JOB_FAILED,
                           reason=f"status report: {part}not delivered (TP-ST 0x{code:02X})")
        else:
            runtime.report(job_id, protocol.JOB_DELIVERED)
        self.journal.flush()

    def _match_early_reports(self, key: str) -> None:
        for item in list(self._unmatched):
            if ref_key(item[1].reference, item[1].recipient) == key:
                self._unmatched.remove(item)
                self.status_report(item[1])
