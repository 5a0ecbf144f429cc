"""The outgoing job's state machine, as data (the h11 way).

``TRANSITIONS[state][event] -> next state``. Every state change the store
writes is looked up here first: a move that is not in this table is refused.
The diagram and the table of transitions in docs/protocol.md are generated
from this module (``python -m bridge.core.jobstates_doc --write
docs/protocol.md``); a test fails when the document differs from it.

``unconfirmed`` ("sent-unconfirmed"): the job may have reached the radio
network but its result never came back (a modem that did not answer after the
PDU was written, a device whose link stayed down past the grace, a phone whose
journal was replaced). It is never given to another device; a later report
from its device (sent, delivered, failed) can still settle it, and a job that
was only waiting for its device's link is that device's again when it comes
back (``resume``).
"""

from __future__ import annotations

NEW = "new"  # not a stored state: a job before the store has accepted it
QUEUED = "queued"
DISPATCHED = "dispatched"
SENT = "sent"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
UNCONFIRMED = "unconfirmed"

# The states a stored job can be in.
STATES = (QUEUED, DISPATCHED, UNCONFIRMED, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED)
FINAL_STATES = frozenset({DELIVERED, FAILED, EXPIRED, CANCELLED})

ENQUEUE = "enqueue"
DISPATCH = "dispatch"
REQUEUE = "requeue"
RESUME = "resume"

TRANSITIONS: dict[str, dict[str, str]] = {
    NEW: {ENQUEUE: QUEUED},
    QUEUED: {DISPATCH: DISPATCHED, "expire": EXPIRED, "cancel": CANCELLED, "fail": FAILED},
    DISPATCHED: {REQUEUE: QUEUED, "sent": SENT, "fail": FAILED, "cancel": CANCELLED,
                 "unconfirmed": UNCONFIRMED},
    UNCONFIRMED: {"sent": SENT, "fail": FAILED, RESUME: DISPATCHED},
    SENT: {"delivered": DELIVERED, "fail": FAILED},
    DELIVERED: {},
    FAILED: {},
    EXPIRED: {},
    CANCELLED: {},
}

# What each state and each transition means (docs/protocol.md is written from these).
STATE_MEANINGS: dict[str, str] = {
    QUEUED: "stored, waiting for its date and for a device of its account",
    DISPATCHED: "pushed to one device, which has not answered yet (it counts against that device's window)",
    UNCONFIRMED: "may have reached the radio network, but its result was lost (or its device's link is down): "
                 "never given to another device",
    SENT: "the network took it; a delivery report may follow",
    DELIVERED: "the delivery report came back positive (final)",
    FAILED: "it will not be sent: the device or the network refused it, or it ran out of attempts (final)",
    EXPIRED: "not dispatched within its ttl (final)",
    CANCELLED: "withdrawn before it was sent (final)",
}

MEANINGS: dict[tuple[str, str], str] = {
    (NEW, ENQUEUE): "the API accepted it (a client-supplied `id_sms_api` already stored returns that job instead)",
    (QUEUED, DISPATCH): "claimed for an online device of its account: priority 2 before 1 before 0, then "
                        "`date_to_send`, then arrival",
    (QUEUED, "expire"): "its ttl ran out before any device took it",
    (QUEUED, "cancel"): "withdrawn while waiting",
    (QUEUED, "fail"): "refused before any device took it",
    (DISPATCHED, REQUEUE): "the device rejected it without beginning it: back to the queue for any device "
                           "(after `[dispatcher] max_attempts`, `fail` instead)",
    (DISPATCHED, "sent"): "the device reports that the network took it",
    (DISPATCHED, "fail"): "the device reports a failure, or the job ran out of attempts",
    (DISPATCHED, "cancel"): "withdrawn while on a device",
    (DISPATCHED, "unconfirmed"): "the device began it but lost its result; or the device stayed away longer "
                                 "than `[agents] requeue_grace_s` (it may have sent it: it waits for that "
                                 "device); or the device came back with a new journal that cannot know it",
    (UNCONFIRMED, "sent"): "a later report from its device says the network took it",
    (UNCONFIRMED, "fail"): "a later report from its device says it failed",
    (UNCONFIRMED, RESUME): "it was only waiting for its device's link, and the device is back with the same "
                           "journal: its ledger settles it (a job it does not know is pushed to it again)",
    (SENT, "delivered"): "the delivery report came back positive",
    (SENT, "fail"): "the delivery report came back negative",
}


class InvalidTransition(ValueError):
    pass


def next_state(state: str, event: str) -> str:
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition(f"job in state {state!r} cannot take {event!r}") from None


def path(state: str, target: str) -> list[str]:
    """The events that lead from ``state`` to ``target`` (shortest), e.g. a
    delivery report for a job still ``dispatched`` is ``["sent", "delivered"]``.
    Empty when already there; raises InvalidTransition when unreachable."""
    if state == target:
        return []
    frontier: list[tuple[str, list[str]]] = [(state, [])]
    seen = {state}
    while frontier:
        current, events = frontier.pop(0)
        for event, nxt in TRANSITIONS.get(current, {}).items():
            if nxt == target:
                return events + [event]
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, events + [event]))
    raise InvalidTransition(f"no way from {state!r} to {target!r}")
