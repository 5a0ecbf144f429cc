"""What the webhooks package takes from the store, imported in one place.

Every other module of this package imports store names from here, so that a
change of where the store keeps them is one edit.
"""

from __future__ import annotations

from bridge.store.sqlite import (
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
    OutboxRow,
    Store,
)

__all__ = [
    "CALL_INCOMING", "CALL_MISSED", "CALL_OUTGOING", "CALL_QUALIFICATION", "LINK_CLICKED", "SMS_DELIVERED",
    "SMS_DISPATCHED", "SMS_FAILED", "SMS_QUEUED", "SMS_RECEIVED", "SMS_SENT", "OutboxRow", "Store",
]
