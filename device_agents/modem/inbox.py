"""Incoming SMS parts in, whole messages out (sans-I/O, clock passed in).

Parts of a concatenated SMS are grouped by (sender, reference, total). A
group is complete when every part 1..total is there; one whose parts stop
coming is given up after ``timeout`` seconds and comes out with what it has,
flagged ``incomplete``. Every part carries the key of its stored record (or
None for a ``+CMT`` that was never stored), so that the agent deletes all
of a message's records once the bridge has acked it. A part that comes
again while its message waits (a network retry, a modem storing it twice)
is not a part twice: its record rides along and is deleted with the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import pdu


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    text: str
    at: float  # the SMSC timestamp of the first part (Unix seconds)
    records: tuple[tuple[str, int], ...]  # (key, storage index) of every stored part
    incomplete: bool = False
    contents: tuple[str, ...] = ()  # content hashes of its parts (for duplicate detection)


@dataclass(slots=True)
class _Group:
    first_seen: float
    parts: dict[int, tuple[str | None, int | None, pdu.Deliver]] = field(default_factory=dict)
    extra: list[tuple[str, int]] = field(default_factory=list)  # records of repeated parts
    contents: list[str] = field(default_factory=list)


class Reassembler:
    def __init__(self, *, timeout: float = 600.0) -> None:
        self.timeout = timeout
        self._groups: dict[tuple[str, int, int], _Group] = {}
        self._keys: set[str] = set()

    def holds(self, key: str) -> bool:
        """Is this stored record a part waiting for its siblings?"""
        return key in self._keys

    def add(self, key: str | None, index: int | None, deliver: pdu.Deliver, now: float,
            content: str = "") -> Message | None:
        concat = deliver.concat
        if concat is None or concat.total <= 1:
            records = ((key, index),) if key is not None and index is not None else ()
            return Message(deliver.sender, deliver.text, deliver.timestamp.timestamp(), records,
                           contents=(content,) if content else ())
        gid = (deliver.sender, concat.ref, concat.total)
        group = self._groups.setdefault(gid, _Group(first_seen=now))
        if key is not None:
            self._keys.add(key)
        if concat.seq in group.parts:
            # the same part twice (a network retry, a modem storing it twice): keep the
            # first, delete this one's record with the message's
            if key is not None and index is not None:
                group.extra.append((key, index))
            return None
        group.parts[concat.seq] = (key, index, deliver)
        if content:
            group.contents.append(content)
        if len(group.parts) < concat.total:
            return None
        del self._groups[gid]
        return self._message(group, incomplete=False)

    def expired(self, now: float) -> list[Message]:
        out = []
        for gid in [g for g, grp in self._groups.items() if now - grp.first_seen >= self.timeout]:
            out.append(self._message(self._groups.pop(gid), incomplete=True))
        return out

    def next_deadline(self) -> float | None:
        if not self._groups:
            return None
        return min(g.first_seen for g in self._groups.values()) + self.timeout

    def _message(self, group: _Group, *, incomplete: bool) -> Message:
        parts = [group.parts[s] for s in sorted(group.parts)]
        delivers = [d for _, _, d in parts]
        for key, _, _ in parts:
            if key is not None:
                self._keys.discard(key)
        for key, _ in group.extra:
            self._keys.discard(key)
        if incomplete:
            text = "".join(d.text for d in delivers)
        else:
            try:
                text = pdu.reassemble(delivers)
            except ValueError:
                text = "".join(d.text for d in delivers)
        records = tuple((k, i) for k, i, _ in parts if k is not None and i is not None) + tuple(group.extra)
        return Message(delivers[0].sender, text, delivers[0].timestamp.timestamp(), records, incomplete,
                       tuple(group.contents))
