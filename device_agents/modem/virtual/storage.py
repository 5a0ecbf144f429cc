"""SMS storage: one set of slots per memory (SM on the SIM, ME in the
modem, SR for status reports), and the commands that read it.

TS 27.005 §3.2.2 (+CPMS): <mem1> is read and deleted by +CMGL/+CMGR/+CMGD,
<mem2> is written by +CMGW and sent from by +CMSS, <mem3> is where received
messages go when routed to storage (+CNMI <mt>=1). Stored memories survive
reboots and unplugs (the SIM's, the modem's flash); the selection does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .core import ModemCore
from .errors import Reply, cms
from .records import StoredMessage
from .state import args_of, int_args


@dataclass(slots=True)
class MessageStore:
    """Slots per memory; ``capacity`` slots in each."""

    memories: tuple[str, ...] = ("SM",)
    capacity: int = 30
    base: int = 1  # first index
    slots: dict[str, dict[int, StoredMessage]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for mem in self.memories:
            if mem != "MT":
                self.slots.setdefault(mem, {})

    def of(self, mem: str) -> dict[int, StoredMessage]:
        """The slots of ``mem``; "MT" (TS 27.005 §3.1: "ME" and "SM" together) reads as SM."""
        return self.slots["SM" if mem == "MT" else mem]

    def valid(self, index: int) -> bool:
        return self.base <= index < self.base + self.capacity

    def store(self, mem: str, stat: int, data: bytes, tpdu_length: int) -> int | None:
        """Put a PDU in the first free slot of ``mem``; None when full."""
        slots = self.of(mem)
        for index in range(self.base, self.base + self.capacity):
            if index not in slots:
                slots[index] = StoredMessage(stat, data, tpdu_length)
                return index
        return None


def message_lines(head: str, index: int | None, message: StoredMessage) -> list[str]:
    prefix = f"{head}: {index}," if index is not None else f"{head}: "
    return [f"{prefix}{message.stat},,{message.tpdu_length}", message.pdu.hex().upper()]


class StorageCommands(ModemCore):
    """AT+CPMS, +CMGL, +CMGR, +CMGD."""

    _cpms: list[str]

    def _read_memory(self) -> dict[int, StoredMessage]:
        return self.memory.of(self._cpms[0])

    def _storage_counts(self, mem: str) -> str:
        return f"{len(self.memory.of(mem))},{self.memory.capacity}"

    def _at_cpms(self, rest: str) -> Reply | None:
        if rest == "?":
            self._need_sim(sms=True)
            return Reply(["+CPMS: " + ",".join(f'"{m}",{self._storage_counts(m)}' for m in self._cpms)])
        if rest == "=?":
            options = ",".join(f'"{m}"' for m in self.profile.memories)
            receive = ",".join(f'"{m}"' for m in self.profile.receive_memories)
            return Reply([f"+CPMS: ({options}),({options}),({receive})"])
        self._need_sim(sms=True)
        memories = [m.upper() for m in args_of(rest[1:])]
        if not 1 <= len(memories) <= 3 or any(m not in self.profile.memories for m in memories[:2]):
            raise cms(302)
        if len(memories) == 3 and memories[2] not in self.profile.receive_memories:
            raise cms(302)  # e.g. MC75i: ME is no receive memory (gammu PR #1207)
        self._cpms[: len(memories)] = memories
        return Reply(["+CPMS: " + ",".join(self._storage_counts(m) for m in memories)])

    def _at_cmgl(self, rest: str) -> Reply | None:
        if rest == "=?":
            return Reply(["+CMGL: (0-4)"])
        self._need_sim(sms=True)
        arg = rest[1:].strip() if rest.startswith("=") else "0"
        if not arg.isdigit() or int(arg) > 4:
            raise cms(304 if self.settings.cmgf == 0 else 305)
        stat = int(arg)
        lines: list[str] = []
        for index, message in sorted(self._read_memory().items()):
            if stat == 4 or message.stat == stat:
                lines += message_lines("+CMGL", index, message)
                if message.stat == 0:
                    message.stat = 1
        return Reply(lines)

    def _at_cmgr(self, rest: str) -> Reply | None:
        if rest == "=?":
            return None
        self._need_sim(sms=True)
        args = int_args(rest[1:], count=1) if rest.startswith("=") else []
        if not args:
            raise cms(304)
        message = self._read_memory().get(args[0])
        if message is None:
            if self.profile.empty_read_ok:
                return Reply()  # Quectel: a bare OK (asterisk-chan-quectel PR #75)
            raise cms(321)
        lines = message_lines("+CMGR", None, message)
        if message.stat == 0:
            message.stat = 1
        return Reply(lines)

    def _at_cmgd(self, rest: str) -> Reply | None:
        if rest == "=?":
            first = self.memory.base
            return Reply([f"+CMGD: ({first}-{first + self.memory.capacity - 1}),(0-4)"])
        self._need_sim(sms=True)
        args = int_args(rest[1:], count=2) if rest.startswith("=") else []
        if not args:
            raise cms(304)
        slots = self._read_memory()
        index, flag = args[0], args[1] if len(args) > 1 else 0
        if flag == 0:
            if not self.memory.valid(index):
                raise cms(321)
            slots.pop(index, None)
        else:
            doomed = {1: {1}, 2: {1, 3}, 3: {1, 2, 3}, 4: {0, 1, 2, 3}}.get(flag)
            if doomed is None:
                raise cms(304)
            for i in [i for i, m in slots.items() if m.stat in doomed]:
                del slots[i]
        return Reply(after=self._flush_pending)
