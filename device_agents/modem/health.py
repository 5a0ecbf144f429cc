"""The modem's health as the bridge sees it: signal, registration, operator."""

from __future__ import annotations

import time
from typing import Any

from .. import protocol
from .at import parse_args
from .session import ModemSession

REG_STATES = {"0": "not registered", "1": "registered", "2": "searching", "3": "denied",
              "4": "unknown", "5": "roaming", "6": "registered", "7": "roaming"}
ACCESS_TECH = {"0": "GSM", "1": "GSM", "2": "UMTS", "3": "EDGE", "4": "HSDPA", "5": "HSUPA", "6": "HSPA",
               "7": "LTE", "8": "EC-GSM", "9": "NB-IoT", "10": "LTE", "11": "NR", "12": "NR", "13": "NR"}


class Health:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def registration(self, args: tuple[str, ...]) -> None:
        """A +CREG/+CGREG/+CEREG URC (``<stat>`` or ``<n>,<stat>,…``)."""
        stat = args[0] if len(args) == 1 else (args[1] if len(args) > 1 else "")
        if stat in REG_STATES:
            self.values["network"] = REG_STATES[stat]

    async def poll(self, session: ModemSession) -> None:
        reply = await session.try_("AT+CSQ")
        if reply and reply.info("+CSQ:"):
            args = parse_args(reply.info("+CSQ:")[0])
            rssi = int(args[0]) if args and args[0].isdigit() else 99
            self.values["signal"] = None if rssi == 99 or rssi > 31 else round(rssi * 100 / 31)
        network = None
        for command, prefix in (("AT+CREG?", "+CREG:"), ("AT+CEREG?", "+CEREG:")):
            reply = await session.try_(command)
            if reply and reply.info(prefix):
                args = parse_args(reply.info(prefix)[0])
                stat = REG_STATES.get(args[1] if len(args) > 1 else "")
                if stat and (network is None or stat in ("registered", "roaming")):
                    network = stat
                if network in ("registered", "roaming"):
                    break
        if network:
            self.values["network"] = network
        reply = await session.try_("AT+COPS?")
        if reply and reply.info("+COPS:"):
            args = parse_args(reply.info("+COPS:")[0])
            self.values["operator"] = args[2][:64] if len(args) > 2 and args[2] else None
            self.values["technology"] = ACCESS_TECH.get(args[3]) if len(args) > 3 else None

    def status(self) -> protocol.Status:
        h = self.values
        return protocol.Status(at=time.time(), signal=h.get("signal"), network=h.get("network"),
                               operator=h.get("operator"), technology=h.get("technology"), timezone="UTC")
