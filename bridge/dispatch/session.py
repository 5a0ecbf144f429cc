"""What the bridge holds per device: the live session (one websocket), what
it knows of the device's health online or not, and its send-rate window."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.config import DeviceConfig
from bridge.store.model import Job
from device_agents import protocol


class RateLimiter:
    """At most ``per_minute`` sends in any 60 s (Android's own rule); 0 = no limit."""

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self._sent: collections.deque[float] = collections.deque()

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()

    def available(self, now: float) -> int:
        if self.per_minute <= 0:
            return 1 << 30
        self._trim(now)
        return max(0, int(self.per_minute) - len(self._sent))

    def record(self, now: float, count: int) -> None:
        if self.per_minute > 0:
            self._sent.extend([now] * count)

    def next_free(self, now: float) -> float | None:
        """When a send becomes possible again, if it is not now."""
        if self.available(now) > 0:
            return None
        return self._sent[0] + 60.0


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

    async def push(self, jobs: list[Job]) -> None:
        # Split to fit the frame limit: a window of long texts does not fit one frame.
        for frame in protocol.encode_batches(lambda batch: protocol.Jobs(jobs=batch),
                                             [j.to_protocol() for j in jobs]):
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
