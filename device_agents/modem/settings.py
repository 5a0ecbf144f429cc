"""The modem agent's settings and the errors its parts share."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .serial_link import LinkError


@dataclass(frozen=True, slots=True, kw_only=True)
class ModemSettings:
    port: str
    pin: str | None = None
    baudrate: int = 115200
    smsc: str | None = None
    hangup_after: float | None = None  # None: the dial job's own hangup_after_s
    command_timeout: float = 10.0
    # AT+CMGS waits for the network: on a slow one the SMS is on the air long before the
    # answer (ModemManager gives it 5 minutes). A part whose answer does not come in time
    # is never sent again: the job is reported "unconfirmed".
    send_timeout: float = 180.0
    multipart_timeout: float = 600.0
    delivery_reports: bool = True
    health_interval: float = 30.0
    ring_gap: float = 8.0  # no RING for this long: the caller gave up
    reopen_backoff_max: float = 30.0
    probe_tries: int = 5
    # Every this many seconds: AT+CNMI? checked (set again if the modem changed it) and
    # every memory listed with AT+CMGL=4, behind the URCs (a lost +CMTI, a URC port
    # pointed elsewhere, +CSMS=1 routing switched off).
    poll_interval: float = 45.0
    duplicate_window: float = 600.0  # a record with the PDU of one reported this recently is a copy

    @classmethod
    def from_options(cls, options: dict[str, Any], **overrides: Any) -> ModemSettings:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in options.items() if k in names}
        values.update(overrides)
        return cls(**values)


class Parked(Exception):
    """The modem must not be retried (a SIM PIN problem): a person has to act."""


class NotReady(LinkError):
    """The modem answers but cannot work yet (no SIM…): retried with backoff."""
