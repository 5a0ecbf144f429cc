"""Recording webhook events in the ``outbox`` table, inside the transaction of
the change that raised them. Which events an account is sent is not decided
here: the :class:`EventFilter` given to the store says so."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from bridge.store import shaping
from bridge.store.model import Job
from bridge.store.protocols import EventFilter


class EventRecorder:
    def __init__(self, event_filter: EventFilter) -> None:
        self.filter = event_filter
        self.listener: Callable[[], None] | None = None

    def wants(self, account: str, kind: str) -> bool:
        return self.filter.wants(account, kind)

    def record(self, db: sqlite3.Connection, account: str, kind: str, order_key: str,
               payload: dict[str, Any], now: float) -> bool:
        """Record one event if the account is sent events of its kind."""
        if not self.filter.wants(account, kind):
            return False
        cur = db.execute(
            "INSERT INTO outbox (account, kind, order_key, payload, created, next_attempt) "
            "VALUES (?, ?, ?, '', ?, ?)", (account, kind, order_key, now, now))
        assert cur.lastrowid is not None
        db.execute("UPDATE outbox SET payload = ? WHERE id = ?",
                   (shaping.event_body(cur.lastrowid, account, kind, payload, now), cur.lastrowid))
        listener = self.listener
        if listener is not None:
            # Still inside the transaction: the listener's own store calls queue
            # behind it on the store thread, so they see the event committed.
            listener()
        return True

    def job_event(self, db: sqlite3.Connection, job: Job, state: str, now: float,
                  reason: str | None, device_id: str | None) -> None:
        """The event an SMS job raises on entering ``state`` (if any)."""
        event = shaping.job_event(job, state, reason, device_id)
        if event is not None:
            self.record(db, *event, now)
