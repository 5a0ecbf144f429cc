"""What the webhooks package takes from the store, imported in one place:
the event kinds (the shared vocabulary, bridge.core.events), the outbox row
and the store's outbox door."""

from __future__ import annotations

from bridge.core.events import (
    CALL_INCOMING,
    CALL_MISSED,
    CALL_OUTGOING,
    CALL_QUALIFICATION,
    LINK_CLICKED,
    SMS_DELIVERED,
    SMS_DISPATCHED,
    SMS_FAILED,
    SMS_QUEUED,
    SMS_RECEIVED,
    SMS_SENT,
)
from bridge.store.model import OutboxRow
from bridge.store.protocols import Outbox as Store

__all__ = [
    "CALL_INCOMING", "CALL_MISSED", "CALL_OUTGOING", "CALL_QUALIFICATION", "LINK_CLICKED", "SMS_DELIVERED",
    "SMS_DISPATCHED", "SMS_FAILED", "SMS_QUEUED", "SMS_RECEIVED", "SMS_SENT", "OutboxRow", "Store",
]
