"""What the store holds and hands out: frozen, slotted records, the same for
every backend."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.core import jobstates as js
from bridge.core.records import quick_init
from device_agents import protocol

ID_ALPHABET = string.ascii_letters + string.digits


def _byte_table(alphabet: str) -> tuple[bytes, bytes]:
    """A byte → character table for ``bytes.translate``, and the bytes to drop:
    those past the last whole multiple of the alphabet's size (keeping them
    would make the first characters likelier)."""
    size = len(alphabet)
    usable = 256 - 256 % size
    table = bytes(ord(alphabet[b % size]) if b < usable else 0 for b in range(256))
    return table, bytes(range(usable, 256))


ID_TABLE = _byte_table(ID_ALPHABET)


def random_texts(count: int, length: int) -> list[str]:
    """``count`` strings of ``length`` characters drawn uniformly from
    :data:`ID_ALPHABET`, from one read of the system's random source mapped
    in one ``translate`` (drawing each character with ``secrets.choice`` cost
    a third of the store thread's time on bulk requests)."""
    if length <= 0:
        return [""] * count
    table, drop = ID_TABLE
    want = count * length
    out = b""
    while len(out) < want:  # 8 of 256 bytes are dropped: one read almost always does
        out += secrets.token_bytes(want + want // 16 + 8).translate(table, drop)
    text = out[:want].decode("ascii")
    return [text[i:i + length] for i in range(0, want, length)]


def random_text(length: int) -> str:
    return random_texts(1, length)[0]


# The priority of one-time codes and other messages a person waits for: one place of every
# device's window is kept for it (bridge.dispatch.dispatcher), and the SQLite store commits its
# writes ahead of the others waiting with them (bridge.store.sqlite.base).
URGENT = 2


# A generated id_sms_api: the time in milliseconds, in base 62 over the alphabet in byte order
# (7 characters: in order until 2081), then 8 random characters. Ids made one after the other
# sort one after the other, so that a batch's keys land together at the end of the jobs table's
# unique (account, id_sms_api) index: with 15 random characters each key of a 1,000-message batch
# dirtied a page of its own, written to the WAL at the commit and again at the checkpoint
# (docs/benchmarks.md). 8 random characters (47 bits) a millisecond; no two keys of one call
# are the same.
ID_LENGTH = 15
ID_TIME_CHARS = 7
ID_ORDERED = "".join(sorted(ID_ALPHABET))


def _time_prefix(ms: int) -> str:
    base = len(ID_ORDERED)
    chars = []
    for _ in range(ID_TIME_CHARS):
        ms, digit = divmod(ms, base)
        chars.append(ID_ORDERED[digit])
    return "".join(reversed(chars))


def new_id_sms_api() -> str:
    """A 15-character identifier in the style of inSIM's (``FI5O7apqaaqcUmQ``)."""
    return new_id_sms_apis(1)[0]


def new_id_sms_apis(count: int) -> list[str]:
    """``count`` distinct identifiers, made in order after those made before
    (while the clock does not go back), from one random read."""
    if not count:
        return []
    prefix = _time_prefix(time.time_ns() // 1_000_000)
    tails = random_texts(count, ID_LENGTH - ID_TIME_CHARS)
    if len(set(tails)) < count:  # about one call in 10^8 of 1,000 ids
        seen: set[str] = set()
        for i, tail in enumerate(tails):
            while tail in seen:
                tail = random_text(ID_LENGTH - ID_TIME_CHARS)
            seen.add(tail)
            tails[i] = tail
    return [prefix + tail for tail in tails]


@quick_init  # built for every message accepted: see bridge.core.records
@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    kind: str  # "sms" | "call"
    phone_number: str
    message: str = ""
    id_sms_api: str | None = None
    url: str | None = None
    priority: int = 1
    due: float | None = None  # epoch seconds; None = now
    ttl_s: float = 86400.0
    parts: int = 1
    encoding: str = "gsm7"
    report: bool = True
    link_code: str | None = None  # tracked link in the text: {public_url}/l/{code} -> url
    # The real text, sealed (bridge.core.sealing), when ``message`` is it masked (a verification code).
    sealed: bytes | None = None


@quick_init  # built for every message accepted: see bridge.core.records
@dataclass(frozen=True, slots=True)
class Job:
    id: int
    account: str
    id_sms_api: str
    kind: str
    phone_number: str
    message: str
    url: str | None
    priority: int
    due: float
    expires: float
    state: str
    reason: str | None
    device_id: str | None
    attempts: int
    parts: int
    encoding: str
    report: bool
    created: float
    updated: float
    # The real text sealed (``message`` is then it masked); None once the job can no longer be pushed.
    sealed: bytes | None = field(default=None, repr=False)
    uid: str = ""  # the store incarnation that made it (schema migration 9)

    @property
    def job_id(self) -> str:
        """The job's id on the wire: "<id>.<uid>" (the bare id for jobs made
        before incarnations), never the same for two jobs of a restored store."""
        return f"{self.id}.{self.uid}" if self.uid else str(self.id)

    def to_protocol(self, text: str | None = None) -> protocol.Job:
        """The job as pushed to a device; ``text``: the real text of a sealed one.
        Its ``attempt`` is the dispatch the push is: a job as claimed (the row as it
        was, still queued) goes out as its next; one pushed again after a reconnect
        (dispatched) as the one it is in."""
        attempt = (self.attempts + 1 if self.state == js.QUEUED else self.attempts) or None
        if self.kind == "call":
            return protocol.Dial(job_id=self.job_id, to=self.phone_number, priority=self.priority, attempt=attempt)
        return protocol.SendSms(job_id=self.job_id, to=self.phone_number,
                                text=self.message if text is None else text,
                                report=self.report, reference=self.id_sms_api, priority=self.priority,
                                attempt=attempt)


def parse_job_id(job_id: str | None) -> tuple[int, str] | None:
    """(row id, incarnation) of a wire job id (see :attr:`Job.job_id`), or None
    if it is not one of ours."""
    if not job_id:
        return None
    number, _, uid = job_id.partition(".")
    if not number.isdigit() or len(number) > 18:
        return None
    return int(number), uid


# What JobQueue.reconcile writes as the reason of the moves it makes.
FROM_LEDGER = "as the device's ledger says on reconnect"
REJECTED_IN_LEDGER = "rejected by device (its ledger on reconnect)"
REPLACED_JOURNAL = ("pushed to an earlier journal of its device (reinstalled or replaced): "
                    "it may have been sent; never sent again")


def ledger_states(ledger: Iterable[protocol.LedgerEntry]) -> dict[str, str]:
    """Job id -> state, as a hello's ledger says."""
    return {e.job_id: e.state for e in ledger}


@quick_init  # built for every message accepted: see bridge.core.records
@dataclass(frozen=True, slots=True)
class Enqueued:
    job: Job
    created: bool  # False: an earlier job with the same id_sms_api was returned


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One recorded webhook event, as the deliverer claims it."""
    id: int
    account: str
    kind: str
    order_key: str
    payload: str  # JSON text: the event's fields plus event_id, kind, account, at
    created: float
    attempts: int


# What an outbox entry is waiting for (OutboxEntry.status).
OUTBOX_PENDING = "pending"  # not attempted yet
OUTBOX_RETRYING = "retrying"  # attempted and refused; tried again at next_attempt
OUTBOX_DELIVERED = "delivered"
OUTBOX_DEAD = "dead"  # given up on; replayable


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One recorded webhook event as an operator reads it."""
    id: int
    account: str
    kind: str
    order_key: str
    payload: str
    created: float
    attempts: int
    next_attempt: float
    delivered_at: float | None
    dead: bool
    last_error: str | None

    @property
    def status(self) -> str:
        if self.delivered_at is not None:
            return OUTBOX_DELIVERED
        if self.dead:
            return OUTBOX_DEAD
        return OUTBOX_RETRYING if self.attempts > 0 else OUTBOX_PENDING


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A webhook event to record: ``kind`` (bridge.core.events) for
    ``account``; events of one ``order_key`` are delivered in the order they
    were recorded."""
    account: str
    kind: str
    order_key: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """One address-book entry (upserted by account and number)."""
    phone_number: str
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    address: str = ""
    country_code: str = ""


@dataclass(frozen=True, slots=True)
class Link:
    """A tracked short link: ``{public_url}/l/{code}`` redirects to ``url``."""
    code: str
    account: str
    id_sms_api: str
    phone_number: str
    url: str
    created: float
    clicks: int


# Verification code states (stored); "dead" and "expired" are also derived.
CODE_PENDING = "pending"
CODE_VERIFIED = "verified"
CODE_DEAD = "dead"
CODE_EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class VerificationCode:
    id: int
    account: str
    phone_number: str
    salt: bytes
    digest: bytes
    created: float
    expires: float
    attempts: int
    max_attempts: int
    state: str
    verified_at: float | None
    id_sms_api: str | None
    sms_status: str | None  # the state of the SMS job that carried it

    def status(self, now: float) -> str:
        """``verified``, ``dead`` (no try left), ``expired`` or ``pending``."""
        if self.state == CODE_VERIFIED:
            return CODE_VERIFIED
        if self.state == CODE_DEAD or self.attempts >= self.max_attempts:
            return CODE_DEAD
        if now >= self.expires:
            return CODE_EXPIRED
        return CODE_PENDING


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What applying a batch of agent events did."""
    acked: list[str] = field(default_factory=list)  # event ids stored (or seen before)
    requeued: int = 0  # rejected jobs that went back to the queue
    finished: int = 0  # jobs that left the device's window (sent, failed, rejected, unconfirmed)


class StoreUnavailable(Exception):
    """The store cannot be reached (its database is down, refuses connections
    or dropped ours). Nothing of the failed call was accepted unless it says
    so; try again after ``retry_after`` seconds. The API answers 503."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
