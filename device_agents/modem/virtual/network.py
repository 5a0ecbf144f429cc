"""The radio side of SMS: what the network delivers (SMS, status reports) and
what the DTE sends (AT+CMGS / +CMGW / +CMSS in PDU mode, TS 27.005 §3.5).

Routing of what arrives follows AT+CNMI (TS 27.005 §3.4.1): <mt>=2/3 sends
a deliver as +CMT, <mt>=1 stores it and announces +CMTI; <ds>=1 sends a
status report as +CDS, <ds>=2 stores it and announces +CDSI, <ds>=0 drops it.
PDUs are encoded and decoded by :mod:`device_agents.modem.pdu` only.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from device_agents.modem import gsm7, pdu

from .core import ModemCore, now_iso, now_scts, toa
from .errors import Reply, cms
from .records import Transmission
from .state import args_of, int_args


class Network(ModemCore):
    _mr: int
    _concat_ref: int

    def _next_mr(self) -> int:
        self._mr = (self._mr + 1) % 256
        return self._mr

    # -- network → modem -----------------------------------------------------------------

    def _incoming_sms(self, sender: str, text: str) -> int:
        encoding = gsm7.pick_encoding(text)
        chunks = gsm7.split_text(text, encoding)
        self._concat_ref = (self._concat_ref + 1) % 256
        total = len(chunks)
        for seq, chunk in enumerate(chunks, 1):
            data = pdu.encode_deliver(
                sender,
                chunk,
                timestamp=now_scts(),
                smsc=self.smsc,
                concat=(self._concat_ref, total, seq) if total > 1 else None,
                encoding=encoding,
            )
            self._network_deliver("deliver", data)
        return total

    def _network_deliver(self, kind: str, data: bytes) -> None:
        tpdu_length = len(data) - 1 - data[0]
        if not self._registered() or self._cnma_expected is not None:
            # The network keeps it and tries again; and with +CSMS=1 the TA sends no
            # other +CMT/+CDS before the last one is acknowledged (TS 27.005 §3.4.1).
            self._pending.append((kind, data, tpdu_length))
            return
        copies = 2 if self.profile.stores_twice and kind == "deliver" else 1
        for copy in range(copies):
            if copy:  # the second copy comes half a second later (LilyGo-Modem-Series #155)
                self._later(0.4, self._route, kind, data, tpdu_length)
            else:
                self._route(kind, data, tpdu_length)

    def _route(self, kind: str, data: bytes, tpdu_length: int) -> None:
        mt, ds = self.settings.cnmi[1], self.settings.cnmi[3]
        if kind == "deliver":
            if mt in (2, 3):
                self._urc(f"+CMT: ,{tpdu_length}", data.hex().upper(), sms=True)
                self._expect_ack(kind, data)
                return
            mem = self._cpms_receive()
            index = self.memory.store(mem, 0, data, tpdu_length)
            if index is None:
                self._pending.append((kind, data, tpdu_length))
                return
            if mt == 1:
                self._urc(f'+CMTI: "{mem}",{index}', sms=True)
        else:  # status report
            if ds == 1:
                self._urc(f"+CDS: {tpdu_length}", data.hex().upper(), sms=True)
                self._expect_ack(kind, data)
            elif ds == 2:
                mem = self.profile.report_memory or self._cpms_receive()
                index = self.memory.store(mem, 0, data, tpdu_length)
                if index is None:
                    self._pending.append((kind, data, tpdu_length))
                    return
                said_mem, said_index = self.profile.report_announced or (mem, index)
                self._urc(f'+CDSI: "{said_mem}",{said_index}', sms=True)
            # ds == 0: status reports are not routed to the TE (TS 27.005): dropped

    def _expect_ack(self, kind: str, data: bytes) -> None:
        """+CSMS=1: the TE must acknowledge this +CMT/+CDS with +CNMA (TS 27.005 §3.4.4)."""
        if self.settings.csms != 1:
            return
        self._cnma_expected = (kind, data)
        self._ack_timer = self._later(self.profile.ack_timeout, self._ack_missed)

    def _ack_missed(self) -> None:
        """No +CNMA in time: the TA sets <mt> and <ds> to 0 and the network will try again
        (TS 27.005 §3.4.4); with <mt>=0 the retry is stored without an indication."""
        expected, self._cnma_expected = self._cnma_expected, None
        self._ack_timer = None
        mode, _, bm, _, bfr = self.settings.cnmi
        self.settings.cnmi = (mode, 0, bm, 0, bfr)
        if expected is not None:
            kind, data = expected
            self._later(self.network_retry, self._network_deliver, kind, data)
        self._flush_pending_later()

    def _cnma_received(self) -> None:
        self._cancel_timer(self._ack_timer)
        self._ack_timer = None
        self._cnma_expected = None
        self._flush_pending_later()

    def _flush_pending_later(self) -> None:
        if self._pending:
            self._later(0.0, self._flush_pending)

    def _cpms_receive(self) -> str:
        return self._cpms[2]

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for i, (kind, data, _) in enumerate(pending):
            if self._cnma_expected is not None:  # one un-acknowledged +CMT/+CDS at a time
                self._pending.extend(pending[i:])
                return
            self._network_deliver(kind, data)

    def _status_report(self, reference: int, recipient: str, scts: datetime) -> None:
        data = pdu.encode_status_report(
            reference=reference,
            recipient=recipient,
            scts=scts,
            discharge=now_scts(),
            status_code=0,
            smsc=self.smsc,
        )
        self._network_deliver("report", data)

    # -- modem → network -----------------------------------------------------------------

    def _transmit(self, submit: pdu.Submit) -> int:
        mr = self._next_mr()
        concat = (
            {"ref": submit.concat.ref, "total": submit.concat.total, "seq": submit.concat.seq}
            if submit.concat
            else None
        )
        record = Transmission(
            to=submit.recipient,
            text=submit.text,
            at=now_iso(),
            reference=mr,
            report_requested=submit.request_report,
            concat=concat,
        )
        self.transmissions.append(record)
        self._log_radio(asdict(record))
        if submit.request_report:
            scts = now_scts()
            self._later(self.report_delay, self._status_report, mr, submit.recipient, scts)
        return mr

    def _prompting(self, rest: str, command: str) -> Reply:
        if rest == "=?":
            return Reply()
        self._need_sim(sms=True)
        if self.settings.cmgf != 0:
            raise cms(305)
        args = int_args(rest[1:], count=2) if rest.startswith("=") else []
        if not args or not 7 <= args[0] <= 176:
            raise cms(304)
        self._pdu_length = args[0]
        self._pdu_command = command if len(args) == 1 else f"{command}:{args[1]}"
        return Reply(prompt=True)

    def _at_cmgs(self, rest: str) -> Reply:
        return self._prompting(rest, "+CMGS")

    def _at_cmgw(self, rest: str) -> Reply:
        return self._prompting(rest, "+CMGW")

    def _pdu_received(self, length: int, hex_text: str) -> Reply:
        try:
            message = pdu.decode(hex_text, incoming=False, tpdu_length=length)
        except (ValueError, pdu.PduError):
            raise cms(304) from None
        assert isinstance(message, pdu.Submit)
        command, _, stat = self._pdu_command.partition(":")
        if command == "+CMGW":
            data = bytes.fromhex(hex_text)
            index = self.memory.store(self._cpms[1], int(stat) if stat else 2, data, length)
            if index is None:
                raise cms(322)
            return Reply([f"+CMGW: {index}"])
        if not self._registered():
            raise cms(331)
        if self._random.random() < self.fault_options.cms500_rate:
            raise cms(500)  # fault: the modem refuses; nothing went on the air
        # On the air now; the result waits for the network (fault: network_delay).
        return Reply([f"+CMGS: {self._transmit(message)}"], final_delay=self.fault_options.network_delay)

    def _at_cmss(self, rest: str) -> Reply:
        self._need_sim(sms=True)
        args = int_args(rest[1:], count=1) if rest.startswith("=") else []
        stored = self.memory.of(self._cpms[1]).get(args[0]) if args else None
        if stored is None:
            raise cms(321)
        try:
            message = pdu.decode(stored.pdu, incoming=True)
        except pdu.PduError:
            raise cms(304) from None
        if not isinstance(message, pdu.Submit):
            raise cms(302)
        if not self._registered():
            raise cms(331)
        stored.stat = 3
        return Reply([f"+CMSS: {self._transmit(message)}"])

    def _at_csca(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f'+CSCA: "{self._text(self.smsc)}",{toa(self.smsc)}'])
        if rest == "=?":
            return None
        args = args_of(rest[1:])
        if not args or not args[0]:
            raise cms(304)
        self.smsc = self._from_text(args[0])
        return None

    def _at_csmp(self, rest: str) -> Reply | None:
        return Reply(["+CSMP: 17,167,0,0"]) if rest == "?" else None

    def _at_csdh(self, rest: str) -> Reply | None:
        return Reply(["+CSDH: 0"]) if rest == "?" else None
