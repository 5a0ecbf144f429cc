"""What both store backends do in Python around their statements, written once:
a row into a :class:`Job`, a job's walk through the state table (its history
lines, counter deltas and webhook events, for the backend to write), what a
device's job report does to the job, the webhook events that records raise and
the body an outbox row carries, and the message list's filters and page.

The SQL stays with each backend (:mod:`.sqlite`, :mod:`.postgres`); nothing
here does I/O."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import operator
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core import events
from bridge.core import jobstates as js
from bridge.core.records import maker
from bridge.store import paging
from bridge.store.model import (
    FROM_LEDGER,
    REJECTED_IN_LEDGER,
    REPLACED_JOURNAL,
    Enqueued,
    Job,
    Link,
    NewJob,
    new_id_sms_apis,
    parse_job_id,
)
from bridge.store.schema import PUSHABLE_STATES, job_counter
from device_agents import protocol

log = logging.getLogger(__name__)

# What an agent's job report asks for (``rejected`` and ``accepted`` are handled apart).
REPORTED: dict[str, str] = {protocol.JOB_SENT: js.SENT, protocol.JOB_DELIVERED: js.DELIVERED,
                            protocol.JOB_FAILED: js.FAILED, protocol.JOB_UNCONFIRMED: js.UNCONFIRMED}

Event = tuple[str, str, str, dict[str, Any]]  # account, kind, order key, payload


# Made for every job read or written, by position (bridge.core.records.maker).
_job = maker(Job)
_enqueued = maker(Enqueued)


def job_from_row(row: Sequence[Any]) -> Job:
    """A row of :data:`bridge.store.schema.JOB_COLUMNS` (``report`` stored as 0/1)."""
    values = list(row)
    values[16] = bool(values[16])
    return _job(*values)


# -- new jobs ------------------------------------------------------------------------------

Fresh = dict[str, tuple[NewJob, float, float]]  # key -> (the job, due, expires)
ENQUEUED_STATE = js.next_state(js.NEW, js.ENQUEUE)  # a job's state as it is stored


def plan_jobs(jobs: list[NewJob], now: float, existing: Collection[str] = ()) -> tuple[list[str], Fresh]:
    """Each job's key (its id_sms_api, or a generated one), and the jobs to insert under their keys
    with their due and expiry dates: not those ``existing`` (sent before), nor a key's second job in
    the batch (the first one stands)."""
    if not any(map(_own_key, jobs)):  # every key generated: each new, none twice (most batches)
        keys = new_id_sms_apis(len(jobs))
        # a date in the past means: now
        return keys, {key: (new, now, now + new.ttl_s) if new.due is None else
                      (new, new.due, max(new.due, now) + new.ttl_s) for key, new in zip(keys, jobs, strict=True)}
    keys = []
    fresh: Fresh = {}
    generated = iter(new_id_sms_apis(sum(1 for new in jobs if not new.id_sms_api)))
    for new in jobs:
        key = new.id_sms_api or next(generated)
        keys.append(key)
        if key in existing or key in fresh:
            continue
        due = new.due if new.due is not None else now
        fresh[key] = (new, due, max(due, now) + new.ttl_s)  # a date in the past means: now
    return keys, fresh


_own_key = operator.attrgetter("id_sms_api")


def made_in_order(account: str, fresh: Fresh, first_id: int, state: str, now: float,
                  uid: str) -> list[Enqueued]:
    """The answers to a batch whose jobs (``fresh``, each asked for once) were all inserted, with
    the ids from ``first_id`` on, in order: each job as :func:`new_job` makes it, created."""
    return [_enqueued(new_job(job_id, account, key, planned, state, now, uid), True)
            for job_id, (key, planned) in enumerate(fresh.items(), first_id)]


def new_job(job_id: int, account: str, key: str, planned: tuple[NewJob, float, float], state: str,
            now: float, uid: str) -> Job:
    """The job just inserted, as a SELECT would return it; ``uid``: the store's incarnation
    (see :attr:`Job.job_id`)."""
    new, due, expires = planned
    return _job(job_id, account, key, new.kind, new.phone_number, new.message, new.url, new.priority, due, expires,
                state, None, None, 0, new.parts, new.encoding, new.report, now, now, new.sealed, uid)


def history_lines(created: float | None, stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A job's history (``state``, ``at``, ``device_id``, ``reason``) from the lines stored for it:
    the first line, the job queued at its creation (``created``; None: no such job), is not stored
    but made here. Stores written before that keep it stored: it is not doubled."""
    if created is None:
        return stored
    first = {"state": ENQUEUED_STATE, "at": created, "device_id": None, "reason": None}
    if stored and stored[0] == first:
        return stored
    return [first, *stored]


def link_rows(account: str, fresh: Fresh, created: dict[str, Job], now: float) -> list[tuple[Any, ...]]:
    """``links`` rows (code, account, job_id, id_sms_api, phone_number, url, created) of the new jobs
    whose text carries a tracked link."""
    return [(fresh[k][0].link_code, account, job.id, k, job.phone_number, job.url, now)
            for k, job in created.items() if fresh[k][0].link_code and job.url]


def enqueued(keys: list[str], created: dict[str, Job], existing: dict[str, Job]) -> list[Enqueued]:
    """One answer per job asked for, in order: the key's first new job is ``created``, every other
    (sent before, or twice in the batch) is answered with the job stored under its key."""
    if not existing and list(created) == keys:  # each asked for once, and made (most batches)
        return [_enqueued(job, True) for job in created.values()]
    out: list[Enqueued] = []
    first: set[str] = set()
    for key in keys:
        if key in created and key not in first:
            first.add(key)
            out.append(_enqueued(created[key], True))
        else:
            out.append(_enqueued(created.get(key) or existing[key], False))
    return out


# -- webhook events ----------------------------------------------------------------------

def job_event(job: Job, state: str, reason: str | None, device_id: str | None) -> Event | None:
    """The event an SMS job raises on entering ``state`` (None: it raises none)."""
    kind = events.STATE_EVENTS.get(state)
    if kind is None or job.kind != "sms":
        return None
    payload: dict[str, Any] = {"id_sms_api": job.id_sms_api, "phone_number": job.phone_number,
                               "state": state, "device_id": device_id, "parts": job.parts,
                               # what forms that show the whole message need (Notimation's)
                               "job_id": job.id, "message": job.message, "created": job.created,
                               "due": job.due}
    if reason:
        payload["reason"] = reason
    return job.account, kind, job.id_sms_api, payload


def report_event(account: str, device_id: str, ev: protocol.Event, row_id: int | None) -> Event:
    """The event a device's report raises once stored (``row_id``: the inbound SMS's or the call's)."""
    if isinstance(ev, protocol.SmsReceived):
        # Each inbound SMS is its own message: one its receiver refuses holds back no other.
        return account, events.SMS_RECEIVED, f"in:{row_id}", {
            "from": ev.sender, "message": ev.text, "date": ev.at, "device_id": device_id,
            "incomplete": ev.incomplete, "inbound_id": row_id}
    if isinstance(ev, protocol.CallEvent):
        return account, events.call_kind(ev.direction), f"call:{row_id}", {
            "phone_number": ev.number, "call_time": ev.at, "duration_s": ev.duration_s,
            "direction": ev.direction, "device_id": device_id}
    if isinstance(ev, protocol.CallNote):
        return note_event(account, ev.number, ev.text, ev.at, "mobile", device_id)
    raise TypeError(f"not a report: {type(ev).__name__}")


def note_event(account: str, number: str, text: str, at: float, source: str, device_id: str | None) -> Event:
    return account, events.CALL_QUALIFICATION, f"note:{number}", {
        "from": number, "qualification": text, "date": at, "source": source, "device_id": device_id}


def click_event(link: Link, code: str, now: float) -> Event:
    return link.account, events.LINK_CLICKED, link.id_sms_api, {
        "id_sms_api": link.id_sms_api, "phone_number": link.phone_number, "link": link.url, "date": now,
        "code": code, "clicks": link.clicks}


def event_body(event_id: int, account: str, kind: str, payload: dict[str, Any], at: float) -> str:
    """The JSON an outbox row carries (what every webhook form is made from)."""
    return json.dumps(dict(payload, event_id=f"evt_{event_id}", kind=kind, account=account, at=at),
                      ensure_ascii=False)


# -- job moves -----------------------------------------------------------------------------

JobEventSink = Callable[[Job, str, float, str | None, str | None], None]  # job, state, now, reason, device


class Moves:
    """Job moves of one transaction, for the backend to write together (its ``flush``): history lines,
    job updates (``state, reason, updated, device_id, back in the queue, sealed text wiped, id``), counter
    deltas and the accounts whose queue got work back; each step's webhook event goes to ``record`` as it
    is taken."""
    __slots__ = ("counts", "history", "record", "requeued", "updates")

    def __init__(self, record: JobEventSink) -> None:
        self.record = record
        self.history: list[tuple[Any, ...]] = []
        self.updates: dict[int, tuple[Any, ...]] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.requeued: set[str] = set()

    def move(self, job: Job, target: str, now: float, *, reason: str | None = None,
             device_id: str | None = None) -> Job:
        """Take ``job`` to ``target`` through the state table, one history line (and webhook event)
        per step; the job as it now is."""
        state = job.state
        for step in js.path(state, target):
            state = js.next_state(state, step)
            self.history.append((job.id, state, now, device_id, reason))
            self.record(job, state, now, reason, device_id)
        assign = None if target == js.QUEUED else (device_id or job.device_id)
        if target == js.QUEUED:
            self.requeued.add(job.account)
        self.updates[job.id] = (target, reason, now, assign, target == js.QUEUED, target not in PUSHABLE_STATES,
                                job.id)
        self.counts[job_counter(job.state, job.priority)] -= 1
        self.counts[job_counter(target, job.priority)] += 1
        return dataclasses.replace(job, state=target, reason=reason, device_id=assign, updated=now,
                                   sealed=job.sealed if target in PUSHABLE_STATES else None)

    def clear(self) -> None:
        self.history.clear()
        self.updates.clear()
        self.counts.clear()
        self.requeued.clear()


def apply_job_report(device_id: str, ev: protocol.JobState, now: float, max_attempts: int,
                     jobs: dict[int, Job], moves: Moves) -> tuple[int, int]:
    """Apply one job report to ``jobs`` (the reported ones, read in the transaction) through
    ``moves``; (jobs that left the device's window, jobs requeued)."""
    parsed = parse_job_id(ev.job_id)
    job = jobs.get(parsed[0]) if parsed is not None else None
    if job is not None and parsed is not None and job.uid != parsed[1]:
        job = None  # a job of an earlier incarnation of the store (a restored backup): not this one
    if job is None:
        log.warning("device %s reported unknown job %r", device_id, ev.job_id)
        return 0, 0
    if job.device_id != device_id:
        # The job was given back to the queue and maybe to another device: this
        # device's word about it no longer counts.
        log.info("device %s reported job %s that is no longer its own", device_id, ev.job_id)
        return 0, 0
    if ev.attempt is not None and ev.attempt != job.attempts:
        # About an earlier dispatch to this same device (a rejection still in its outbox
        # when the job came back to it): what became of this dispatch is still to come.
        log.info("device %s reported %s of job %s's dispatch %d; it is at dispatch %d: ignored",
                 device_id, ev.state, ev.job_id, ev.attempt, job.attempts)
        return 0, 0
    if ev.state == protocol.JOB_ACCEPTED:
        return 0, 0
    if ev.state == protocol.JOB_REJECTED:
        if job.state != js.DISPATCHED:
            return 0, 0  # only a job not begun can be rejected (an unconfirmed one was begun)
        if job.attempts >= max_attempts:
            jobs[job.id] = moves.move(job, js.FAILED, now, device_id=device_id,
                                      reason=f"rejected {job.attempts} times; last: {ev.reason or 'no reason'}")
            return 1, 0
        jobs[job.id] = moves.move(job, js.QUEUED, now, device_id=device_id,
                                  reason=f"rejected by device: {ev.reason or 'no reason'}")
        return 1, 1
    target = REPORTED[ev.state]
    try:
        js.path(job.state, target)
    except js.InvalidTransition:
        log.info("device %s: job %s is %s, ignoring %s", device_id, job.id, job.state, ev.state)
        return 0, 0
    left = 1 if job.state == js.DISPATCHED else 0
    jobs[job.id] = moves.move(job, target, now, reason=ev.reason, device_id=device_id)
    return left, 0


def reconcile_moves(device_id: str, journal: str, known: dict[str, str], found: list[tuple[Job, str | None]],
                    now: float, moves: Moves) -> list[Job]:
    """What a device's hello settles (``JobQueue.reconcile``): ``found`` are its jobs dispatched or held
    ``unconfirmed`` while its link was lost, each with the journal it was pushed to; ``known`` what its
    ledger says (job id -> state). Moves go to ``moves``; the jobs to push to it again are returned."""
    repush: list[Job] = []
    for job, pushed_to in found:
        if pushed_to is not None and pushed_to != journal and job.job_id not in known:
            # Pushed to an earlier journal of the device: this one cannot know what became of it.
            moves.move(job, js.UNCONFIRMED, now, device_id=device_id, reason=REPLACED_JOURNAL)
            continue
        if job.state == js.UNCONFIRMED:  # only waiting for its device's link: the device is back
            job = moves.move(job, js.DISPATCHED, now, device_id=device_id, reason="its device is back")
        state = known.get(job.job_id)
        if state is None:
            repush.append(job)
        elif state == protocol.JOB_REJECTED:  # it let it go (the report may have been acked long ago)
            moves.move(job, js.QUEUED, now, device_id=device_id, reason=REJECTED_IN_LEDGER)
        elif state in REPORTED:  # its ledger says what became of it (the event may have been acked long ago)
            moves.move(job, REPORTED[state], now, device_id=device_id, reason=FROM_LEDGER)
    return repush


# -- the message list -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows a message list reads: outgoing jobs (of ``states``, None: all), inbound SMS."""
    outgoing: bool
    inbound: bool
    states: list[str] | None


def message_scope(direction: str | None, status: str | Sequence[str] | None) -> Scope | None:
    """What ``direction`` and ``status`` ask for (None: nothing can match)."""
    wanted = None if status is None else {status} if isinstance(status, str) else set(status)
    states = None if wanted is None else sorted(wanted - {"received"})
    outgoing = direction in (None, "out") and (states is None or bool(states))
    inbound = direction in (None, "in") and (wanted is None or "received" in wanted)
    if not (outgoing or inbound):
        return None
    return Scope(outgoing, inbound, states)


def message_page(chosen: list[paging.Key], found: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The page in the keys' order, each row with its cursor."""
    return [dict(found[(k.direction, k.id)], cursor=k.cursor()) for k in chosen]
