"""What the API may ask of the daemon around it, as typed protocols given to
:class:`bridge.api.app.Api` at construction (the daemon implements them; a
test may give its own, or none)."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from bridge.config import AccountConfig


class DaemonView(Protocol):
    """The devices as the daemon sees them, and what it can do with them."""

    def devices_view(self, account: AccountConfig | None) -> list[dict[str, Any]]:
        """Every configured device (of ``account``, or all) with its state."""
        ...

    def phones_online(self, login: str) -> bool:
        """Whether a connected device of the account can place calls."""
        ...

    async def simulate(self, account: AccountConfig, what: str, body: dict[str, Any]) -> dict[str, Any]:
        """Make a virtual device of the account report an event (``incoming-sms``,
        ``call``); ValueError or LookupError when it cannot."""
        ...

    async def recheck(self, device_id: str) -> bool:
        """Close the device's session if its token was revoked; True if closed."""
        ...

    async def store_fault(self) -> str | None:
        """Why the store takes no writes now (disk full, file deleted, database
        out of reach), or None."""
        ...


class MetricsSource(Protocol):
    """The Prometheus page (``GET /metrics``)."""

    async def handler(self, request: web.Request) -> web.Response: ...
