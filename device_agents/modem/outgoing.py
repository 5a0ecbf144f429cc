"""Outgoing SMS: parts written with AT+CMGS, their references kept, and
status reports matched back to their jobs.

The durable memory says, per job, which parts the modem confirmed (their
TP-MR) and which part was being attempted; it is written before the radio
is touched and again once the modem answered, so a crash or an unplug
between the two knows that part's fate is uncertain.

**A part whose PDU may have been written is never sent again automatically.**
On a slow network the modem puts the SMS on the air at once and answers only
when the network has (ModemManager waits 5 minutes for AT+CMGS); a second
AT+CMGS would put it on the air twice. So a part whose result is lost (the
command timed out after the PDU went, the modem was unplugged, the agent
died) is *uncertain*: the other parts still go, and the job is reported
``unconfirmed`` with the reason. A status report still settles it: one for a
reference we never learned, from the recipient of exactly one job with an
uncertain part, is that part's.
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
from .serial_link import CommandError, CommandTimeout, LinkLost
from .session import ModemSession
from .settings import ModemSettings

UNMATCHED_REPORT_S = 120.0  # a status report may beat the +CMGS reply it answers
# Errors that say nothing was transmitted (SIM busy, no network) and that another
# try later (or another device) may well pass: the job is handed back (rejected).
# +CMS ERROR: 332 (network timeout) and 500 (unknown) say no such thing: failed.
TRANSIENT_CMS = frozenset({314, 331})
TRANSIENT_CME = frozenset({14, 30, 31, 515})


class SendFailed(Exception):
    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class Outgoing:
    def __init__(self, *, session: ModemSession, journal: ModemJournal, holder: RuntimeHolder,
                 settings: ModemSettings, tasks: TaskSet, log: logging.LoggerAdapter[logging.Logger],
                 unmatched: list[tuple[float, pdu.StatusReport]] | None = None) -> None:
        self.session = session
        self.journal = journal
        self.memory = journal.memory
        self.holder = holder
        self.settings = settings
        self.tasks = tasks
        self.log = log
        # Reports not matched yet. The agent's own list, kept across reopens: a report read
        # before its part's answer settles that part once the modem is back.
        self._unmatched: list[tuple[float, pdu.StatusReport]] = [] if unmatched is None else unmatched

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
        uncertain = sorted(send.get("uncertain", [])) if send is not None else []
        if send is not None:
            if send.get("report"):
                send["sent"] = True  # kept: its status reports may still come
            else:
                self.memory.forget_send(job.job_id)
            self.journal.changed()  # carried by the report below
        network_ref = ",".join("?" if mr < 0 else str(mr) for mr in mrs)[:128]
        if uncertain:
            total = len(mrs)
            which = ", ".join(f"{s}/{total}" for s in uncertain)
            reason = (f"part {which}: written to the modem, its result lost "
                      f"({send.get('why', 'no answer') if send else 'no answer'}); not sent again")
            report(job.job_id, protocol.JOB_UNCONFIRMED, reason=reason, parts=total, network_ref=network_ref)
            self.log.warning("job %s: unconfirmed: %s", job.job_id, reason)
        else:
            report(job.job_id, protocol.JOB_SENT, parts=len(mrs), network_ref=network_ref)
            self.log.info("job %s: sent to %s in %d part(s)", job.job_id, mask_number(job.to), len(mrs))
        self.journal.flush()
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
            if str(part.seq) in send["mrs"] or part.seq in send.get("uncertain", []):
                continue
            send["attempt"] = part.seq
            self.journal.save()  # before the radio is touched: the part's fate is uncertain from here
            try:
                reply = await self.session.cmd(f"AT+CMGS={part.tpdu_length}", pdu=part.hex,
                                               timeout=self.settings.send_timeout)
            except LinkLost as exc:
                if not exc.uncertain:  # gone before the PDU was written: nothing on the air
                    send["attempt"] = None
                    self.journal.save()
                raise
            except CommandTimeout as exc:
                if not exc.uncertain:  # no prompt came: the PDU was never written
                    send["attempt"] = None
                    self.journal.save()
                    raise SendFailed(f"the modem did not take part {part.seq}/{part.total}",
                                     transient=part.seq == 1) from None
                self._uncertain(job, send, part.seq,
                                f"no result within {self.settings.send_timeout:g} s")
                continue
            except CommandError as exc:
                code = exc.final.code
                transient = part.seq == 1 and (
                    (exc.final.kind is ResultKind.CMS and code in TRANSIENT_CMS)
                    or (exc.final.kind is ResultKind.CME and code in TRANSIENT_CME))
                send["attempt"] = None
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
            # Carried by the next write: the next part's attempt, or the job's report. A crash
            # before it leaves the part uncertain (never sent again), as a crash before the
            # answer would.
            self.journal.changed()
            if send["report"] and mr >= 0:
                self._match_early_reports(ref_key(mr, job.to))
        return [send["mrs"].get(str(s), -1) for s in range(1, len(parts) + 1)]

    def _uncertain(self, job: protocol.SendSms, send: dict[str, Any], seq: int, why: str) -> None:
        """Part ``seq`` may be on the air and its result is lost: never sent again."""
        send.setdefault("uncertain", [])
        if seq not in send["uncertain"]:
            send["uncertain"].append(seq)
        send["why"] = why
        send["attempt"] = None
        self.journal.save()
        early = self._unmatched[:]
        self._unmatched.clear()
        for _, report in early:  # a report that came before we knew the part was uncertain
            self.status_report(report)
        self.log.warning("job %s: part %d/%d written, %s: not sent again", job.job_id, seq,
                         send.get("total", 1), why)

    async def recover(self, job: protocol.SendSms) -> tuple[str, str | None]:
        """A job left ``sending`` by a crash or an unplug, now that the modem is back."""
        send = self.memory.sends.get(job.job_id)
        if send is None or (not send.get("mrs") and send.get("attempt") is None and not send.get("uncertain")):
            return protocol.JOB_REJECTED, "not transmitted before the modem went away"
        if send.get("attempt") is not None:
            # Its AT+CMGS was under way when the modem (or the agent) went: the PDU may
            # be on the air. Never sent again.
            self._uncertain(job, send, send["attempt"], "the modem went away before its result")
        if not send.get("sent") and job.secret:
            # The journal keeps no text of a secret job: parts never attempted
            # cannot go now. Those on the air stay the only ones sent.
            left = [s for s in range(1, send.get("total", 1) + 1)
                    if str(s) not in send.get("mrs", {}) and s not in send.get("uncertain", [])]
            if left:
                total = send.get("total", 1)
                self.memory.forget_send(job.job_id)
                self.journal.changed()  # carried by the runtime's report of the recovered state
                return (protocol.JOB_UNCONFIRMED if send.get("uncertain") else protocol.JOB_FAILED,
                        f"{total - len(left)} of {total} parts went before the modem went away; the rest "
                        f"cannot be sent (a secret text is not kept across a restart)")
        if not send.get("sent"):
            # Parts never attempted go now; the uncertain ones never again.
            try:
                await self.transmit(job)
            except SendFailed as exc:
                self.memory.forget_send(job.job_id)
                self.journal.changed()
                return protocol.JOB_FAILED, exc.reason
        send = self.memory.sends.get(job.job_id) or send
        uncertain = sorted(send.get("uncertain", []))
        self._after_recovery(job.job_id, send)
        if uncertain:
            total = send.get("total", 1)
            which = ", ".join(f"{s}/{total}" for s in uncertain)
            return (protocol.JOB_UNCONFIRMED,
                    f"part {which}: written to the modem, its result lost ({send.get('why')}); not sent again")
        return protocol.JOB_SENT, "transmitted before the modem went away"

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
            hit = self._uncertain_part(report)
        if hit is None:
            now = time.monotonic()
            self._unmatched[:] = [(t, r) for t, r in self._unmatched if now - t < UNMATCHED_REPORT_S]
            self._unmatched.append((now, report))
            self.log.debug("status report for unknown reference %d", report.reference)
            return
        job_id, seq = hit
        send = self.memory.sends.get(job_id)
        if send is not None:
            send.setdefault("outcome", {})[str(seq)] = [report.status, report.status_code]
            self.settle(job_id)
        self.journal.save()

    def _uncertain_part(self, report: pdu.StatusReport) -> list[Any] | None:
        """A report for a reference we never learned: the uncertain part of the one job
        to that recipient that has one (none or several: no guess)."""
        digits = ref_key(0, report.recipient).split(":", 1)[1]
        known = {mr for s in self.memory.sends.values() for mr in s.get("mrs", {}).values()}
        if report.reference in known:
            return None
        candidates = [(job_id, seq) for job_id, s in self.memory.sends.items()
                      if s.get("to") and ref_key(0, s["to"]).split(":", 1)[1] == digits
                      for seq in s.get("uncertain", []) if str(seq) not in s.get("outcome", {})]
        if len(candidates) != 1:
            return None
        job_id, seq = candidates[0]
        self.log.info("job %s: a status report settles uncertain part %d", job_id, seq)
        return [job_id, seq]

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
