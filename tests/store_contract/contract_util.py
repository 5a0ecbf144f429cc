"""Helpers shared by the contract tests (backend-neutral: protocol methods only)."""

from __future__ import annotations

import json
from typing import Any

from bridge.core import jobstates as js
from bridge.store.model import NewJob
from bridge.store.protocols import Store
from device_agents import protocol as p


def sms(**kw: Any) -> NewJob:
    return NewJob(kind="sms", phone_number=kw.pop("to", "+33612345678"), message=kw.pop("text", "hi"), **kw)


class Reports:
    """A device's job reports and other events, with fresh event ids."""

    def __init__(self) -> None:
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"e{self.n}"

    def job(self, job_id: int | str, state: str, reason: str | None = None, attempt: int | None = None) -> p.JobState:
        return p.JobState(event_id=self._id(), job_id=str(job_id), state=state, at=1.0, reason=reason,
                          attempt=attempt)

    def sms(self, sender: str, text: str) -> p.SmsReceived:
        return p.SmsReceived(event_id=self._id(), sender=sender, text=text, at=1000.0)

    def call(self, number: str, direction: str, duration_s: float = 0.0) -> p.CallEvent:
        return p.CallEvent(event_id=self._id(), direction=direction, number=number, at=1000.0,
                           duration_s=duration_s)

    def note(self, number: str, text: str) -> p.CallNote:
        return p.CallNote(event_id=self._id(), number=number, text=text, at=1000.0)


async def states(store: Store, job_id: int) -> list[str]:
    return [h["state"] for h in await store.history(job_id)]


async def assert_history_follows_the_table(store: Store, job_id: int) -> None:
    """Every step of the job's history is a move of bridge.core.jobstates."""
    state = js.NEW
    for step in await states(store, job_id):
        assert step in js.TRANSITIONS[state].values(), f"{state} -> {step} is not in the table"
        state = step


async def outbox_events(store: Store, account: str | None = None) -> list[dict[str, Any]]:
    """The recorded events' payloads, oldest first."""
    return [json.loads(r["payload"]) for r in await store.outbox(account)]
