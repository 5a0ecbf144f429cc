"""Recording webhook events in the ``outbox`` table, inside the transaction of
the change that raised them (PostgreSQL). The events of one transaction are
gathered, then written by :meth:`Batch.flush` with one round trip; their ids
are taken from the table's sequence after the rows that raised them were
locked, so events of one key are numbered in the order they happened across
every daemon. Which events an account is sent is not decided here: the
:class:`EventFilter` given to the store says so."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bridge.store import shaping
from bridge.store.model import Job
from bridge.store.protocols import EventFilter

OUTBOX_CHANNEL = "simbridge_outbox"

# Events written by the transaction under way (in this task): its listener calls after commit.
written: contextvars.ContextVar[list[int]] = contextvars.ContextVar("written")


@dataclass(slots=True)
class Batch:
    """The events of one transaction, written together."""
    recorder: EventRecorder
    rows: list[tuple[str, str, str, dict[str, Any], float]] = field(default_factory=list)

    def record(self, account: str, kind: str, order_key: str, payload: dict[str, Any], now: float) -> bool:
        if not self.recorder.filter.wants(account, kind):
            return False
        self.rows.append((account, kind, order_key, payload, now))
        return True

    def job_event(self, job: Job, state: str, now: float, reason: str | None, device_id: str | None) -> None:
        """The event an SMS job raises on entering ``state`` (if any)."""
        event = shaping.job_event(job, state, reason, device_id)
        if event is not None:
            self.record(*event, now)

    async def flush(self, conn: asyncpg.Connection) -> int:
        if not self.rows:
            return 0
        ids = [r[0] for r in await conn.fetch(
            "SELECT nextval(pg_get_serial_sequence('outbox', 'id')) FROM generate_series(1, $1)", len(self.rows))]
        ids.sort()
        values = []
        for id_, (account, kind, key, payload, now) in zip(ids, self.rows, strict=True):
            values.append((id_, account, kind, key, shaping.event_body(id_, account, kind, payload, now), now, now))
        await conn.executemany("INSERT INTO outbox (id, account, kind, order_key, payload, created, next_attempt) "
                               "VALUES ($1, $2, $3, $4, $5, $6, $7)", values)
        # Other daemons' deliverers wake at commit; this one's after it (:meth:`EventRecorder.committed`).
        await conn.execute("SELECT pg_notify($1, $2)", OUTBOX_CHANNEL, self.recorder.node)
        count = len(self.rows)
        self.rows.clear()
        counter = written.get(None)
        if counter is not None:
            counter[0] += count
        return count


class EventRecorder:
    def __init__(self, event_filter: EventFilter, node: str) -> None:
        self.filter = event_filter
        self.node = node  # this process's name on the channels: its own notices are not heard twice
        self.listener: Callable[[], None] | None = None

    def wants(self, account: str, kind: str) -> bool:
        return self.filter.wants(account, kind)

    def batch(self) -> Batch:
        return Batch(self)

    def committed(self, count: int) -> None:
        """After a commit: the listener is called once per event written."""
        for _ in range(count):
            self.poke()

    def poke(self) -> None:
        listener = self.listener
        if listener is not None:
            listener()
