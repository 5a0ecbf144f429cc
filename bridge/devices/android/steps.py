"""Where a phone stands in its set-up: the states and steps ``simbridge devices`` shows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Device set-up states, as `simbridge devices` shows them.
ABSENT = "absent"  # configured, not plugged in
SETTING_UP = "setting_up"  # steps running
NEEDS_USER = "needs_user"  # waiting for the person with the phone (reason says what to do)
STARTING = "starting"  # set up; its session is connecting
ONLINE = "online"  # its session is connected
ERROR = "error"  # something failed; retried with backoff

# Steps, in order (the route's own steps sit between "tuning" and "ready").
STEPS = ("usb", "authorised", "inbox", "tuning", "app", "permissions", "helper", "ready")


@dataclass(frozen=True, slots=True)
class Step:
    """A step that is not done: its state and a sentence for the person with the phone."""
    state: str
    step: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceSetup:
    """Where one configured phone stands."""
    device_id: str
    serial: str
    state: str
    step: str  # the step reached, or the one that is blocked
    reason: str
    since: float = 0.0
    notes: tuple[str, ...] = ()  # what the shell could not do (said plainly, not blocking)

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "serial": self.serial, "state": self.state,
                "step": self.step, "reason": self.reason, "since": self.since, "notes": list(self.notes)}


_GRANT = re.compile(r"(android\.permission\.[A-Z_]+): granted=(true|false)")


def granted_permissions(dumpsys: str) -> dict[str, bool]:
    """``dumpsys package <pkg>``'s permission lines (AOSP ``PermissionsState`` dump:
    ``android.permission.SEND_SMS: granted=true, flags=[…]``)."""
    out: dict[str, bool] = {}
    for name, value in _GRANT.findall(dumpsys):
        out[name.rpartition(".")[2]] = out.get(name.rpartition(".")[2], False) or value == "true"
    return out
