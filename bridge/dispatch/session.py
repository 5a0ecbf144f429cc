"""What the bridge holds per device: the live session (one websocket), what
it knows of the device's health online or not, and its pace (caps per minute,
hour and day in parts, random gaps)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.config import DeviceConfig
from device_agents import protocol
from device_agents.pacing import CapWindow as Window

WINDOWS = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))


def caps_of(device: DeviceConfig) -> protocol.Caps:
    """The device's caps, as its welcome tells an agent that keeps them."""
    return protocol.Caps(**{f"per_{name}": int(getattr(device, f"max_per_{name}")) for name, _span in WINDOWS})


class Pacer:
    """A device's pace: its caps per minute, hour and day in parts, and an
    optional random gap between two sends. Pure: every call is given the time."""

    def __init__(self, device: DeviceConfig, *, rng: random.Random | None = None) -> None:
        self.windows = [Window(span, int(getattr(device, f"max_per_{name}"))) for name, span in WINDOWS]
        self.gap = (device.min_gap_s, device.max_gap_s)
        self.next_at = 0.0  # the random gap: no send before this
        self.need = 1  # parts the next claim needs (more when the queue's head did not fit)
        self.counted = False  # any send counted yet (see ``seed``)
        self._rng = rng or random.Random()

    def reconfigure(self, device: DeviceConfig) -> None:
        for window, (name, _span) in zip(self.windows, WINDOWS, strict=True):
            window.cap = int(getattr(device, f"max_per_{name}"))
        self.gap = (device.min_gap_s, device.max_gap_s)

    @property
    def spaced(self) -> bool:
        return self.gap[1] > 0

    def smallest_cap(self) -> int:
        caps = [w.cap for w in self.windows if w.cap > 0]
        return min(caps) if caps else 1 << 30

    def budget(self, now: float) -> int:
        """Parts that may be sent now."""
        if now < self.next_at:
            return 0
        return min(w.room(now) for w in self.windows)

    def seed(self, now: float, sent: Iterable[tuple[float, int]]) -> bool:
        """Count a device's earlier sends, ``(seconds ago, parts)`` oldest first, as its agent
        tells them in its hello, unless this pacer has counted sends itself: its own count
        then stands (the agent's would count the same sends twice). Whether it took them."""
        if self.counted:
            return False
        self.counted = True
        for ago, count in sent:
            for window in self.windows:
                if ago < window.span:
                    window.record(now - ago, count)
        return True

    def record(self, now: float, parts: list[int]) -> None:
        """Sends of ``parts`` each, claimed at ``now``."""
        self.counted = True
        for count in parts:
            for window in self.windows:
                window.record(now, count)
        if self.spaced and parts:
            self.next_at = now + self._rng.uniform(*self.gap)

    def free_at(self, now: float) -> float:
        """When ``need`` parts may be sent."""
        return max([self.next_at, *(w.free_at(now, self.need) for w in self.windows)])


@dataclass(eq=False)
class DeviceSession:
    device: DeviceConfig
    ws: Any
    hello: protocol.Hello
    window: int
    auth_key: bytes = b""  # the token key the hello proved (checked again on revocation)
    inflight: int = 0
    status: protocol.Status | None = None
    connected_at: float = field(default_factory=time.time)
    closed: bool = False

    @property
    def device_id(self) -> str:
        return self.device.id

    @property
    def account(self) -> str:
        return self.device.account

    async def push(self, jobs: list[protocol.Job]) -> None:
        # Split to fit the frame limit: a window of long texts does not fit one frame.
        for frame in protocol.encode_batches(lambda batch: protocol.Jobs(jobs=batch), jobs):
            await self.ws.send(frame)


@dataclass
class DeviceHealth:
    """What the bridge knows of a device, online or not."""
    online: bool = False
    last_seen: float | None = None
    offline_since: float = field(default_factory=time.time)
    status: protocol.Status | None = None
    capabilities: protocol.Capabilities | None = None
    agent: str = ""
    reason: str = "never connected"
