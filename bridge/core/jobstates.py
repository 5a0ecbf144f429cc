"""The outgoing job's state machine, as data (the h11 way).

``TRANSITIONS[state][event] -> next state``. The store refuses any move not
in this table, and docs/protocol.md's diagram is drawn from it.

::

    queued ──dispatch──▶ dispatched ──sent──▶ sent ──delivered──▶ delivered
      │ ▲                   │  │                └───failed──▶ failed
      │ └─────requeue───────┘  └──failed──▶ failed
      ├──expire──▶ expired
      └──cancel──▶ cancelled
    dispatched ──unconfirmed──▶ unconfirmed ──sent──▶ sent   (──fail──▶ failed)

``unconfirmed`` ("sent-unconfirmed"): the job may have reached the radio
network but its result never came back (a lost link, a modem that did not
answer after the PDU was written). It is never dispatched again; a later
delivery report or the device's ledger can still settle it.
"""

from __future__ import annotations

QUEUED = "queued"
DISPATCHED = "dispatched"
SENT = "sent"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
UNCONFIRMED = "unconfirmed"

STATES = (QUEUED, DISPATCHED, UNCONFIRMED, SENT, DELIVERED, FAILED, EXPIRED, CANCELLED)
FINAL_STATES = frozenset({DELIVERED, FAILED, EXPIRED, CANCELLED})

TRANSITIONS: dict[str, dict[str, str]] = {
    QUEUED: {"dispatch": DISPATCHED, "expire": EXPIRED, "cancel": CANCELLED, "fail": FAILED},
    DISPATCHED: {"requeue": QUEUED, "sent": SENT, "fail": FAILED, "cancel": CANCELLED,
                 "unconfirmed": UNCONFIRMED},
    UNCONFIRMED: {"sent": SENT, "fail": FAILED},
    SENT: {"delivered": DELIVERED, "fail": FAILED},
    DELIVERED: {},
    FAILED: {},
    EXPIRED: {},
    CANCELLED: {},
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
        for event, nxt in TRANSITIONS[current].items():
            if nxt == target:
                return events + [event]
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, events + [event]))
    raise InvalidTransition(f"no way from {state!r} to {target!r}")
