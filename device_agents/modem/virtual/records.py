"""What the virtual modem did, as records: the radio log and the SIM's slots."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Transmission:
    """One SMS the modem put on the air (one PDU: a part of a long message).

    Written to the radio log as a JSON line with ``kind: "sms"``."""

    to: str
    text: str
    at: str  # ISO 8601, UTC
    reference: int  # TP-MR answered in +CMGS
    report_requested: bool = False
    concat: dict[str, int] | None = None  # {"ref", "total", "seq"} for a part
    kind: str = "sms"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call that ended; written to the radio log with ``kind: "call"``."""

    direction: str  # "in" | "out"
    number: str
    at: str
    answered: bool
    duration: float
    kind: str = "call"


@dataclass(slots=True)
class StoredMessage:
    """A slot of a message storage: stat as in AT+CMGL (0 REC UNREAD, 1 REC
    READ, 2 STO UNSENT, 3 STO SENT) and the PDU with its SMSC octets."""

    stat: int
    pdu: bytes
    tpdu_length: int
