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


HELD_RETRY_S = 0.5  # how often messages held for a refusing journal are tried again


def _restore(table: dict[str, Any], old: dict[str, Any]) -> None:
    for key, value in old.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def content_hash(hex_pdu: str) -> str:
    return hashlib.sha1(hex_pdu.strip().upper().encode()).hexdigest()[:16]


def record_key(mem: str, index: int, hex_pdu: str) -> str:
    return f"{mem}:{index}:{content_hash(hex_pdu)}"


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
                 work: asyncio.Queue[tuple[Any, ...]], multipart_timeout: float, duplicate_window: float,
                 on_status_report: Callable[[pdu.StatusReport], None], wake_timers: Callable[[], None],
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.session = session
        self.journal = journal
        self.holder = holder
        self.work = work
        self.on_status_report = on_status_report
        self.wake_timers = wake_timers
        self.log = log
        self.duplicate_window = duplicate_window
        self.inbox = Reassembler(timeout=multipart_timeout)
        # Whole messages the journal refused to write, in order: tried again when it takes writes.
        self.held: list[Message] = []
        self.pending_delete: dict[str, set[tuple[str, int]]] = {}
        self.bad_records: set[str] = set()

    # -- reading -------------------------------------------------------------------------

    async def read(self, mem: str, index: int, *, report: bool = False) -> None:
        """A +CMTI / +CDSI: read the record where the modem says it is."""
        await self.session.select(mem)
        reply = await self.session.cmd(f"AT+CMGR={index}")
        found = records(reply, "+CMGR:", index=index)
        for idx, hex_pdu, length in found:
            self.on_record(mem, idx, hex_pdu, length)
        if not found:
            # Nothing there: Quectel announces reports it keeps in SR as +CDSI: "SM",0
            # (asterisk-chan-quectel PR #75). Read every memory.
            self.log.debug("+C%sI named %s %d, which is empty: reading all storage",
                           "DS" if report else "MT", mem, index)
            self.work.put_nowait(("scan",))

    async def scan(self) -> None:
        """Every readable memory, whole (the safety net behind the URCs)."""
        for mem in self.session.routing.read_memories:
            await self.session.select(mem)
            reply = await self.session.cmd("AT+CMGL=4")
            listed = set()
            for index, hex_pdu, length in records(reply, "+CMGL:"):
                listed.add(record_key(mem, index, hex_pdu))
                self.on_record(mem, index, hex_pdu, length)
            # records reported and acked, deleted since, but not struck off: forget them
            incoming = self.journal.memory.incoming
            stale = [k for k, e in incoming.items()
                     if key_memory(k) == mem and k not in listed and e not in self.journal.outbox]
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
        if self.inbox.holds(key) or key in self.bad_records or self.holds(key):
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
            now = time.time()
            content = content_hash(hex_pdu)
            earlier = self.journal.memory.seen.get(content)
            if earlier is not None and now - earlier[1] < self.duplicate_window:
                self._duplicate(key, index, str(earlier[0]))
                return
            whole = self.inbox.add(key, index, message, now, content)
            if whole is not None:
                self.report(whole)
            else:
                self.wake_timers()

    def _duplicate(self, key: str | None, index: int | None, event_id: str) -> None:
        """The same PDU as a part reported lately: the same SMS, stored (or sent) twice."""
        self.log.info("an SMS the modem gave twice: reported once")
        if key is None or index is None:
            return  # a +CMT: nothing to delete
        self.journal.memory.incoming[key] = event_id
        self.journal.save()
        self._known_record(key, index)

    def _known_record(self, key: str, index: int) -> None:
        event_id = self.journal.memory.incoming[key]
        self.pending_delete.setdefault(event_id, set()).add((key, index))
        if event_id not in self.journal.outbox:
            self.work.put_nowait(("delete", event_id))  # acked already: delete it now

    # -- reporting -----------------------------------------------------------------------

    def expired(self, now: float) -> None:
        self.retry_held()
        for message in self.inbox.expired(now):
            self.report(message)

    def held_deadline(self) -> float | None:
        """When to try the held messages again (None: none held)."""
        return time.time() + HELD_RETRY_S if self.held else None

    def retry_held(self) -> None:
        runtime = self.holder.runtime
        if not self.held or runtime is None or runtime.journal_fault is not None:
            return
        held, self.held = self.held, []
        for message in held:
            self.report(message)

    def holds(self, key: str) -> bool:
        """Whether a stored record is part of a message held for the journal."""
        return any(key == k for m in self.held for k, _ in m.records)

    def _hold(self, message: Message) -> None:
        self.held.append(message)
        self.log.warning("SMS from %s held: the journal takes no writes (%s); kept on the modem",
                         mask_number(message.sender), getattr(self.holder.runtime, "journal_fault", None))
        self.wake_timers()

    def report(self, message: Message) -> None:
        runtime = self.holder.runtime
        if runtime is None:
            return  # offline: the parts stay in storage and are read again
        if runtime.journal_fault is not None:
            self._hold(message)
            return
        event_id = runtime.new_event_id()
        # The record→event map and the parts' contents go in the same journal write as the event.
        memory = self.journal.memory
        before = ({key: memory.incoming.get(key) for key, _ in message.records},
                  {c: memory.seen.get(c) for c in message.contents})
        for key, _ in message.records:
            memory.incoming[key] = event_id
        now = time.time()
        for content in message.contents:
            memory.seen[content] = [event_id, now]
        self.journal.changed()
        if not runtime.try_emit([protocol.SmsReceived(event_id=event_id, sender=message.sender[:32],
                                                      text=message.text[:protocol.MAX_TEXT], at=message.at,
                                                      incomplete=message.incomplete)]):
            # Not in the journal: the memory goes back to what it was (its records are
            # not "reported", so never deleted), and the message waits for the journal.
            for table, old in ((memory.incoming, before[0]), (memory.seen, before[1])):
                _restore(table, old)
            self._hold(message)
            return
        stale = [c for c, (_, t) in memory.seen.items() if now - t >= self.duplicate_window]
        for content in stale:
            del memory.seen[content]
        if stale:
            self.journal.changed()  # carried by the next write
        if message.records:
            self.pending_delete[event_id] = set(message.records)
        self.log.info("SMS received from %s%s", mask_number(message.sender),
                      " (incomplete)" if message.incomplete else "")

    # -- deleting ------------------------------------------------------------------------

    def on_ack(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            if event_id in self.pending_delete:
                self.work.put_nowait(("delete", event_id))

    async def delete(self, event_id: str) -> None:
        records_ = self.pending_delete.pop(event_id, set())
        for key, index in sorted(records_, key=lambda r: (key_memory(r[0]), r[1])):
            await self.session.select(key_memory(key))
            await self.session.cmd(f"AT+CMGD={index}")
            self.journal.memory.incoming.pop(key, None)
        if records_:
            self.journal.save()

    async def delete_index(self, mem: str, index: int) -> None:
        await self.session.select(mem)
        await self.session.cmd(f"AT+CMGD={index}")
