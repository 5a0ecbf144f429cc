"""The modem agent's one durable file: its journal, with the modem's own
memory carried in it.

The runtime's :class:`~device_agents.journal.Journal` (job ledger, event
outbox) is an append-only JSON-lines file. The modem agent's own memory —
what the old ``.state.json`` beside it held — rides in the same file as
``{"t": "modem", "s": {...}}`` records, the last one winning on replay:

``sends``
    per SMS job being transmitted or awaiting its status reports: recipient,
    part count, concatenation reference, the TP-MR of every part the modem
    confirmed, the part being attempted (written *before* its AT+CMGS: from
    then on that part's fate is uncertain and it is never sent again
    automatically), and the parts' delivery outcomes.
``refs``
    ``"<TP-MR>:<last 9 digits of the recipient>"`` → ``[job id, part]``: how
    a status report (+CDS / +CDSI) finds its job, even after a restart.
``incoming``
    stored records already reported to the bridge and not yet deleted:
    ``"<memory>:<index>:<pdu hash>"`` → event id. A record is deleted from
    the modem only once the bridge has acked its event.
``seen``
    content hash of every SMS part reported lately → ``[event id, time]``: a
    record with the same PDU within the duplicate window (a SIMCom A7670
    stores one SMS twice) is the same SMS, deleted with the first, never
    reported again.
``concat_ref``
    the rolling reference for concatenated SMS.
``bad_pin``
    a hash of a PIN the SIM refused: never tried again (SIM tries are few).

One write carries both: a change of the memory is marked with
:meth:`ModemJournal.changed` and goes out with the journal's next write (the
event it belongs to, the job state), or at once with :meth:`ModemJournal.save`.
Every write is one ``write()`` of whole lines, flushed; a torn last line is
skipped on replay. A :meth:`~ModemJournal.save` and a write that carries
events are fsynced before anything goes on: the points that matter (before a
PDU is written, after a record is deleted, before an event is sent). Other
writes (job states, a memory change riding along) are not — the next fsync
of the file makes them durable with the rest, and it always comes before
anything depends on them (the runtime's "sending" before the part's
"attempt", its "sent" just before the event that says so). Compaction rewrites the
file to a temporary one, fsyncs it, renames it over the old one and fsyncs
the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..journal import Journal, lines

RETENTION_S = 7 * 86400


def ref_key(mr: int, number: str) -> str:
    digits = "".join(c for c in number if c.isdigit())
    return f"{mr}:{digits[-9:]}"


def pin_hash(pin: str) -> str:
    return hashlib.sha256(f"simbridge-pin:{pin}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class ModemMemory:
    sends: dict[str, dict[str, Any]] = field(default_factory=dict)
    refs: dict[str, list[Any]] = field(default_factory=dict)
    incoming: dict[str, str] = field(default_factory=dict)
    seen: dict[str, list[Any]] = field(default_factory=dict)
    concat_ref: int = field(default_factory=lambda: int.from_bytes(os.urandom(1), "big"))
    bad_pin: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModemMemory:
        memory = cls(sends=dict(data.get("sends", {})), refs=dict(data.get("refs", {})),
                     incoming=dict(data.get("incoming", {})), seen=dict(data.get("seen", {})),
                     bad_pin=data.get("bad_pin"))
        if "concat_ref" in data:
            memory.concat_ref = int(data["concat_ref"]) & 0xFF
        cutoff = time.time() - RETENTION_S
        for job_id in [j for j, s in memory.sends.items() if s.get("at", 0) < cutoff]:
            memory.forget_send(job_id)
        return memory

    def to_json(self) -> dict[str, Any]:
        return {"concat_ref": self.concat_ref, "bad_pin": self.bad_pin, "sends": self.sends,
                "refs": self.refs, "incoming": self.incoming, "seen": self.seen}

    def next_concat_ref(self) -> int:
        self.concat_ref = (self.concat_ref + 1) & 0xFF
        return self.concat_ref

    def forget_send(self, job_id: str) -> None:
        self.sends.pop(job_id, None)
        for key in [k for k, (j, _) in self.refs.items() if j == job_id]:
            del self.refs[key]


def legacy_state_path(journal_path: str | os.PathLike[str]) -> Path:
    """Where earlier versions kept the modem's memory, beside the journal."""
    return Path(journal_path).with_suffix(".state.json")


class ModemJournal(Journal):
    """The journal with the modem's memory in it; tells the agent which events
    the bridge acked (a record leaves the modem's storage only then)."""

    def __init__(self, path: str | os.PathLike[str], *, on_ack: Callable[[list[str]], None] | None = None,
                 fsync: bool = True) -> None:
        self.memory = ModemMemory()
        self.on_ack = on_ack
        self._dirty = False
        self._save_now = False
        self._has_memory = False
        super().__init__(path, fsync=fsync)
        if not self._has_memory:
            self._adopt_legacy_state()

    def _adopt_legacy_state(self) -> None:
        legacy = legacy_state_path(self.path)
        try:
            data = json.loads(legacy.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return
        self.memory = ModemMemory.from_json(data)
        # Records were keyed "<index>:<hash>" and always on the SIM.
        self.memory.incoming = {(k if k.count(":") >= 2 else f"SM:{k}"): e
                                for k, e in self.memory.incoming.items()}
        self.save()
        legacy.unlink(missing_ok=True)

    # -- the file ------------------------------------------------------------------------

    def _apply(self, rec: dict[str, Any]) -> None:
        if rec.get("t") == "modem":
            self.memory = ModemMemory.from_json(rec["s"])
            self._has_memory = True
        else:
            super()._apply(rec)

    def _extra_records(self) -> list[dict[str, Any]]:
        return [self._memory_record()]

    def _memory_record(self) -> dict[str, Any]:
        return {"t": "modem", "s": self.memory.to_json()}

    def _write(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if self._dirty:
            # First in the write: were it torn, the memory is kept and the
            # event after it is what is lost (the agent finds such records again).
            records.insert(0, self._memory_record())
        data = lines(records)
        if not data:
            return
        # All or nothing (Journal._append): a write the disk refuses raises OSError
        # and leaves the file, and the memory change waiting for a write, as they were.
        self._append(data, sync=self.fsync and (self._save_now or any(r.get("t") == "event" for r in records)))
        self._dirty = False
        self._save_now = False
        self._appended += len(records)
        self._maybe_compact()

    def changed(self) -> None:
        """The memory changed: the next write of the journal carries it."""
        self._dirty = True

    def flush(self) -> None:
        """Write the memory if a change is still waiting for a write to carry it."""
        if self._dirty:
            self._write([])

    def save(self) -> None:
        """Write the memory now, durably (before the radio is touched, after a delete)."""
        self._dirty = True
        self._save_now = True
        self._write([])

    # -- acks ----------------------------------------------------------------------------

    def ack(self, event_ids: Iterable[str]) -> None:
        ids = list(event_ids)
        super().ack(ids)
        if self.on_ack is not None:
            self.on_ack(ids)
