"""The virtual GSM modem, kept importable under its first name; the code lives
in :mod:`device_agents.modem.virtual`."""

from device_agents.modem.virtual import (
    CALL_TRANSITIONS,
    PROFILES,
    CallRecord,
    CallState,
    Profile,
    PtyPort,
    SimCard,
    StoredMessage,
    Transmission,
    VirtualModem,
    profile_named,
    split_command_line,
)

__all__ = [
    "CALL_TRANSITIONS",
    "PROFILES",
    "CallRecord",
    "CallState",
    "Profile",
    "PtyPort",
    "SimCard",
    "StoredMessage",
    "Transmission",
    "VirtualModem",
    "profile_named",
    "split_command_line",
]
