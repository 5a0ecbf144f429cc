"""Incoming SMS and status reports from the modem's storage or its URCs:
read, reassemble, report, and delete only once the bridge has acked.

A stored record is known by ``"<memory>:<index>:<pdu hash>"``. Once its
message is reported, the key maps to the event id in the durable memory,
written in the same journal write as the event itself; the record is
deleted from the modem when the bridge acks the event, and struck off the
memory once deleted. A record seen again while its event waits for the ack
is not reported twice; one seen again after the ack (deleted but a crash
came first) is deleted at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .. import protocol
from ..common import mask_number
from ..runtime import AgentRuntime
from . import pdu
from .at import parse_args
from .durable import ModemJournal
from .inbox import Message, Reassembler
from .serial_link import Reply
from .session import ModemSession


class RuntimeHolder(Protocol):
    runtime: AgentRuntime | None


def record_key(mem: str, index: int, hex_pdu: str) -> str:
    return f"{mem}:{index}:{hashlib.sha1(hex_pdu.strip().upper().encode()).hexdigest()[:16]}"


def key_memory(key: str) -> str:
    return key.split(":", 1)[0]


def event_number(event_id: str) -> int:
    try:
        return int(event_id)
    except ValueError:
        return -1


def records(reply: Reply, prefix: str, *, index: int | None = None) -> list[tuple[int, str, int | None]]:
    """(index, hex PDU, TPDU length) from a +CMGL / +CMGR reply."""
    out = []
    lines = list(reply.lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.upper().startswith(prefix) and i + 1 < len(lines):
            try:
                args = parse_args(line)
            except Exception:  # noqa: BLE001 - a malformed header: skip it
                args = ()
            listed = int(args[0]) if args and args[0].isdigit() else None
            idx = listed if prefix == "+CMGL:" else index
            length = int(args[-1]) if args and args[-1].isdigit() else None
            if idx is not None:
                out.append((idx, lines[i + 1].strip(), length))
            i += 2
        else:
            i += 1
    return out


class Incoming:
    def __init__(self, *, session: ModemSession, journal: ModemJournal, holder: RuntimeHolder,
                 work: asyncio.Queue[tuple[Any, ...]], multipart_timeout: float,
                 on_status_report: Callable[[pdu.StatusReport], None], wake_timers: Callable[[], None],
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.session = session
        self.journal = journal
        self.holder = holder
        self.work = work
        self.on_status_report = on_status_report
        self.wake_timers = wake_timers
        self.log = log
        self.inbox = Reassembler(timeout=multipart_timeout)
        self.pending_delete: dict[str, set[tuple[str, int]]] = {}
        self.bad_records: set[str] = set()

    # -- reading -------------------------------------------------------------------------

    async def read(self, mem: str, index: int) -> None:
        reply = await self.session.cmd(f"AT+CMGR={index}")
        for idx, hex_pdu, length in records(reply, "+CMGR:", index=index):
            self.on_record(mem, idx, hex_pdu, length)

    async def scan(self) -> None:
        mem = "SM"
        reply = await self.session.cmd("AT+CMGL=4")
        seen = set()
        for index, hex_pdu, length in records(reply, "+CMGL:"):
            seen.add(record_key(mem, index, hex_pdu))
            self.on_record(mem, index, hex_pdu, length)
        # records reported and acked, deleted since, but not struck off: forget them
        incoming = self.journal.memory.incoming
        stale = [k for k, e in incoming.items()
                 if key_memory(k) == mem and k not in seen and e not in self.journal.outbox]
        if stale:
            for key in stale:
                del incoming[key]
            self.journal.save()

    def forget_unsent_records(self) -> None:
        """A record noted as reported under an event id the journal never
        stored (a write torn by a crash) was never reported: forget it so
        that the next scan reports it."""
        incoming = self.journal.memory.incoming
        dropped = [k for k, e in incoming.items()
                   if e not in self.journal.outbox and event_number(e) > self.journal.seq]
        for key in dropped:
            del incoming[key]
        if dropped:
            self.journal.save()

    def on_urc_record(self, hex_pdu: str, length: int | None) -> None:
        """A +CMT / +CDS: the message itself, never stored."""
        self._decode_and_route(None, None, None, hex_pdu, length)

    def on_record(self, mem: str, index: int, hex_pdu: str, length: int | None) -> None:
        """One stored record (from +CMGL or +CMGR)."""
        key = record_key(mem, index, hex_pdu)
        if key in self.journal.memory.incoming:
            self._known_record(key, index)
            return
        if self.inbox.holds(key) or key in self.bad_records:
            return
        self._decode_and_route(key, mem, index, hex_pdu, length)

    def _decode_and_route(self, key: str | None, mem: str | None, index: int | None, hex_pdu: str,
                          length: int | None) -> None:
        try:
            message = pdu.decode(hex_pdu, tpdu_length=length)
        except pdu.PduError:
            try:
                message = pdu.decode(hex_pdu)
            except pdu.PduError as exc:
                if key is not None:
                    self.bad_records.add(key)
                self.log.warning("cannot decode the SMS record %s (%s); left in storage", index, exc)
                return
        if isinstance(message, pdu.StatusReport):
            self.on_status_report(message)
            if mem is not None and index is not None:
                self.work.put_nowait(("delete-index", mem, index))
        elif isinstance(message, pdu.Deliver):
            whole = self.inbox.add(key, index, message, time.time())
            if whole is not None:
                self.report(whole)
            else:
                self.wake_timers()

    def _known_record(self, key: str, index: int) -> None:
        event_id = self.journal.memory.incoming[key]
        self.pending_delete.setdefault(event_id, set()).add((key, index))
        if event_id not in self.journal.outbox:
            self.work.put_nowait(("delete", event_id))  # acked already: delete it now

    # -- reporting -----------------------------------------------------------------------

    def expired(self, now: float) -> None:
        for message in self.inbox.expired(now):
            self.report(message)

    def report(self, message: Message) -> None:
        runtime = self.holder.runtime
        if runtime is None:
            return  # offline: the parts stay in storage and are read again
        event_id = runtime.new_event_id()
        # The record→event map goes in the same journal write as the event.
        for key, _ in message.records:
            self.journal.memory.incoming[key] = event_id
        if message.records:
            self.journal.changed()
            self.pending_delete[event_id] = set(message.records)
        runtime.emit([protocol.SmsReceived(event_id=event_id, sender=message.sender[:32],
                                           text=message.text[:protocol.MAX_TEXT], at=message.at,
                                           incomplete=message.incomplete)])
        self.log.info("SMS received from %s%s", mask_number(message.sender),
                      " (incomplete)" if message.incomplete else "")

    # -- deleting ------------------------------------------------------------------------

    def on_ack(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            if event_id in self.pending_delete:
                self.work.put_nowait(("delete", event_id))

    async def delete(self, event_id: str) -> None:
        records_ = self.pending_delete.pop(event_id, set())
        for key, index in sorted(records_, key=lambda r: r[1]):
            await self.session.cmd(f"AT+CMGD={index}")
            self.journal.memory.incoming.pop(key, None)
        if records_:
            self.journal.save()

    async def delete_index(self, mem: str, index: int) -> None:
        await self.session.cmd(f"AT+CMGD={index}")
