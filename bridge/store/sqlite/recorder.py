"""Recording webhook events in the ``outbox`` table, inside the transaction of
the change that raised them. Which events an account is sent is not decided
here: the :class:`EventFilter` given to the store says so."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from bridge.core import events
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
        body = dict(payload, event_id=f"evt_{cur.lastrowid}", kind=kind, account=account, at=now)
        db.execute("UPDATE outbox SET payload = ? WHERE id = ?",
                   (json.dumps(body, ensure_ascii=False), cur.lastrowid))
        listener = self.listener
        if listener is not None:
            # Still inside the transaction: the listener's own store calls queue
            # behind it on the store thread, so they see the event committed.
            listener()
        return True

    def job_event(self, db: sqlite3.Connection, job: Job, state: str, now: float,
                  reason: str | None, device_id: str | None) -> None:
        """The event an SMS job raises on entering ``state`` (if any)."""
        kind = events.STATE_EVENTS.get(state)
        if kind is None or job.kind != "sms":
            return
        payload: dict[str, Any] = {"id_sms_api": job.id_sms_api, "phone_number": job.phone_number,
                                   "state": state, "device_id": device_id, "parts": job.parts,
                                   # what forms that show the whole message need (Notimation's)
                                   "job_id": job.id, "message": job.message, "created": job.created,
                                   "due": job.due}
        if reason:
            payload["reason"] = reason
        self.record(db, job.account, kind, job.id_sms_api, payload, now)
