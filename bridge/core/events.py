"""The webhook event kinds: the shared vocabulary of the store (which records
them) and the webhook side (which decides who is sent what, and renders each
account's form from these canonical names)."""

from __future__ import annotations

from bridge.core import jobstates as js

SMS_QUEUED = "sms_queued"
SMS_DISPATCHED = "sms_dispatched"
SMS_SENT = "sms_sent"
SMS_DELIVERED = "sms_delivered"
SMS_FAILED = "sms_failed"
SMS_UNCONFIRMED = "sms_unconfirmed"  # may have reached the radio; its result was lost (never re-sent)
SMS_RECEIVED = "sms_received"
CALL_INCOMING = "call_incoming"
CALL_OUTGOING = "call_outgoing"
CALL_MISSED = "call_missed"
LINK_CLICKED = "link_clicked"
CALL_QUALIFICATION = "call_qualification"

ALL_KINDS = frozenset({SMS_QUEUED, SMS_DISPATCHED, SMS_SENT, SMS_DELIVERED, SMS_FAILED, SMS_UNCONFIRMED, SMS_RECEIVED,
                       CALL_INCOMING, CALL_OUTGOING, CALL_MISSED, LINK_CLICKED, CALL_QUALIFICATION})

# The event an SMS job raises when it enters a state. ``unconfirmed`` raises
# its own (the JSON form carries it; a later report still raises sent,
# delivered or failed); ``cancelled`` raises none.
STATE_EVENTS: dict[str, str] = {js.QUEUED: SMS_QUEUED, js.DISPATCHED: SMS_DISPATCHED, js.SENT: SMS_SENT,
                                js.DELIVERED: SMS_DELIVERED, js.FAILED: SMS_FAILED, js.EXPIRED: SMS_FAILED,
                                js.UNCONFIRMED: SMS_UNCONFIRMED}


def call_kind(direction: str) -> str:
    """``call_incoming`` / ``call_outgoing`` / ``call_missed`` for a call event's direction."""
    return f"call_{direction}"
