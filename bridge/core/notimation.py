"""Notimation's vocabulary (seed 004), shared by the API's read side and the
webhook form: its numeric message ids and its status and event names, mapped
from ours. docs/api.md has the tables."""

from __future__ import annotations

from bridge.core import events
from bridge.core import jobstates as js

# One numeric id space for both directions: an outgoing SMS (job n) is 2n, an
# inbound SMS (inbound record n) is 2n + 1. Stable, and never ambiguous.


def outbound_id(job_id: int) -> int:
    return 2 * job_id


def inbound_id(record_id: int) -> int:
    return 2 * record_id + 1


def split_id(sms_id: int) -> tuple[str, int]:
    """``("out", job id)`` or ``("in", inbound record id)``."""
    return ("in", (sms_id - 1) // 2) if sms_id % 2 else ("out", sms_id // 2)


# Our job states in Notimation's status names. "received" is Notimation's
# word for an incoming SMS and, in its list filter, for a delivery report:
# a delivered outgoing SMS is "sent" here (Notimation's status set has no
# "delivered"; its filter calls delivery "not 100% reliable"), and the list
# filter "received" finds both.
STATUS = {
    js.QUEUED: "queued",
    js.DISPATCHED: "dispatched",
    js.UNCONFIRMED: "dispatched",  # may have reached the radio; the result is not known
    js.SENT: "sent",
    js.DELIVERED: "sent",
    js.FAILED: "error",
    js.EXPIRED: "cancelled",
    js.CANCELLED: "cancelled",
}
INBOUND_STATUS = "received"

# Which of our states each of Notimation's status filters finds.
STATUS_FILTER: dict[str, tuple[str, ...]] = {
    "pending": (),  # nothing waits unprocessed here: an accepted SMS is queued at once
    "queued": (js.QUEUED,),
    "dispatched": (js.DISPATCHED, js.UNCONFIRMED),
    "sent": (js.SENT, js.DELIVERED),
    "error": (js.FAILED,),
    "cancelled": (js.EXPIRED, js.CANCELLED),
    "received": (js.DELIVERED, "received"),  # "received": every inbound SMS too
}

# Our webhook event kinds in Notimation's event names (its webhook table).
EVENTS = {
    events.SMS_QUEUED: "sms_queued",
    events.SMS_DISPATCHED: "sms_dispatched",
    events.SMS_SENT: "sms_sent",
    events.SMS_FAILED: "sms_error",
    events.SMS_RECEIVED: "sms_received",
}


def job_event_name(kind: str, state: str | None) -> str:
    """The Notimation event of one of our events (an expired job is ``sms_cancelled``)."""
    if kind == events.SMS_FAILED and state in (js.EXPIRED, js.CANCELLED):
        return "sms_cancelled"
    return EVENTS[kind]
