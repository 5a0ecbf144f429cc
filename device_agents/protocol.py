"""The simbridge device protocol, version 2: one schema for both ends.

Every device agent (virtual phone, GSM modem, Android helper) holds one
websocket to the bridge and exchanges JSON text frames whose ``type`` names
the message. This module is the single source of truth for those frames: the
bridge and every agent import it, and ``docs/protocol.md`` describes it.

It is pure standard library on purpose: the Android helper runs it under
Termux's Python, where nothing else is installed.

Frames
------
bridge → agent, first
    ``challenge`` a fresh random nonce, sent as soon as the websocket opens.
agent → bridge
    ``hello``    first frame: version, device id, a *proof* that it holds the
                 device's token (HMAC over the nonce; the token itself never
                 crosses the wire, so a sniffed hello cannot be replayed),
                 capabilities, SIMs,
                 credit window, the agent's *ledger* (jobs it has seen and
                 their last state) so that a reconnect resumes exactly, and
                 the id of its *journal* (random, made with the journal: a
                 reinstalled or replaced phone has a new one).
    ``events``   a batch of events, each with an ``event_id`` unique for that
                 device's journal (the bridge keys them by device, journal and
                 event id). The agent keeps every event in its own outbox until
                 the bridge acks it, and sends it again after a reconnect.
    ``status``   battery, signal, network (not acked: the newest one wins).
bridge → agent
    ``welcome``  answer to a good hello.
    ``jobs``     a batch of jobs (``send_sms``, ``dial``) within the window.
    ``ack``      event ids the bridge has stored durably.
    ``caps``     the device's caps changed (a reload), to an agent that keeps
                 them only.

A malformed, oversized or unknown frame is a :class:`RemoteProtocolError`;
the bridge closes the session with :data:`CLOSE_POLICY` (or websockets'
1009 for a frame over :data:`MAX_FRAME_BYTES`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeVar, overload

T = TypeVar("T")

PROTOCOL_VERSION = 2  # 2: challenge-response hello (no token on the wire)
MAX_FRAME_BYTES = 256 * 1024
MAX_BATCH = 1000
MAX_TEXT = 10_000  # characters of SMS text in one job or event

CLOSE_POLICY = 1008  # RFC 6455 policy violation: bad frame, failed authentication…
CLOSE_TRY_LATER = 1013  # RFC 6455 try again later: too many connections still saying hello
AUTH_FAILED = "authentication failed"  # the one close reason for every authentication failure
CLOSE_TOO_BIG = 1009  # frame over MAX_FRAME_BYTES (websockets sends it)
CLOSE_REPLACED = 4000  # a newer session for the same device took over
CLOSE_SHUTDOWN = 1001  # bridge going away


class ProtocolError(Exception):
    """Base of the protocol's errors."""


class LocalProtocolError(ProtocolError):
    """We tried to build a frame the protocol does not allow."""


class FrameTooBig(LocalProtocolError):
    """A message would encode to a frame over :data:`MAX_FRAME_BYTES`."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a frame the protocol does not allow."""


# Job states an agent reports. ``accepted``: the agent holds the job (it is in
# its ledger). ``sent``: handed to the radio network. ``delivered``: the
# recipient's handset confirmed (only with delivery_reports). ``failed``: it
# will not be delivered. ``rejected``: the agent did not and will not
# transmit it (window full, lease lapsed, no such SIM…): the bridge may give
# the job to a device again. ``unconfirmed``: it may have reached the radio
# network but its result was lost (e.g. a modem's +CMGS answer never came after
# the PDU was written): it is never sent again automatically; a later status
# report may still settle it.
JOB_ACCEPTED = "accepted"
JOB_SENT = "sent"
JOB_DELIVERED = "delivered"
JOB_FAILED = "failed"
JOB_REJECTED = "rejected"
JOB_UNCONFIRMED = "unconfirmed"
AGENT_JOB_STATES = frozenset({JOB_ACCEPTED, JOB_SENT, JOB_DELIVERED, JOB_FAILED, JOB_REJECTED,
                              JOB_UNCONFIRMED})

CALL_DIRECTIONS = frozenset({"incoming", "outgoing", "missed"})


# --------------------------------------------------------------------------
# Field checking: every decoder goes through these, so that a bad frame says
# exactly which field is wrong.


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *,
         required: bool = True, default: Any = None) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise RemoteProtocolError(f"{where}: missing field {key!r}")
        return default
    value = obj[key]
    # bool is an int in Python; never accept it where a number is wanted.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RemoteProtocolError(f"{where}: field {key!r} must be {_kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise RemoteProtocolError(
            f"{where}: field {key!r} must be {_kind_name(kind)}, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RemoteProtocolError(f"{where}: field {key!r} must be a finite number")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# The getters are typed by ``required``: a required field is never None.
@overload
def _text(obj: dict[str, Any], key: str, where: str, *, required: Literal[True] = ..., limit: int = ...) -> str: ...
@overload
def _text(obj: dict[str, Any], key: str, where: str, *, required: bool, limit: int = ...) -> str | None: ...
def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = True,
          limit: int = 256) -> str | None:
    value = _get(obj, key, str, where, required=required)
    if value is not None and len(value) > limit:
        raise RemoteProtocolError(f"{where}: field {key!r} is longer than {limit} characters")
    return value


@overload
def _number(obj: dict[str, Any], key: str, where: str, *, required: Literal[True] = ...,
            default: float | None = ...) -> float: ...
@overload
def _number(obj: dict[str, Any], key: str, where: str, *, required: bool, default: float) -> float: ...
@overload
def _number(obj: dict[str, Any], key: str, where: str, *, required: bool,
            default: None = ...) -> float | None: ...
def _number(obj: dict[str, Any], key: str, where: str, *, required: bool = True,
            default: float | None = None) -> float | None:
    value = _get(obj, key, (int, float), where, required=required, default=default)
    return None if value is None else float(value)


@overload
def _int(obj: dict[str, Any], key: str, where: str, *, required: Literal[True] = ..., default: int | None = ...,
         low: int | None = ..., high: int | None = ...) -> int: ...
@overload
def _int(obj: dict[str, Any], key: str, where: str, *, required: bool, default: int,
         low: int | None = ..., high: int | None = ...) -> int: ...
@overload
def _int(obj: dict[str, Any], key: str, where: str, *, required: bool, default: None = ...,
         low: int | None = ..., high: int | None = ...) -> int | None: ...
def _int(obj: dict[str, Any], key: str, where: str, *, required: bool = True,
         default: int | None = None, low: int | None = None, high: int | None = None) -> int | None:
    value = _get(obj, key, int, where, required=required, default=default)
    if value is None:
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        raise RemoteProtocolError(f"{where}: field {key!r} = {value} is out of range [{low}, {high}]")
    return value


def _list(obj: dict[str, Any], key: str, where: str, *, limit: int = MAX_BATCH,
          required: bool = False) -> list[Any]:
    value = _get(obj, key, list, where, required=required, default=[])
    if len(value) > limit:
        raise RemoteProtocolError(f"{where}: field {key!r} has more than {limit} items")
    return value


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{where}: must be an object, not {type(value).__name__}")
    return value


# --------------------------------------------------------------------------
# Parts of a hello.


@dataclass(frozen=True, slots=True)
class Capabilities:
    sms: bool = True
    calls: bool = False
    delivery_reports: bool = False
    multipart: bool = True
    dual_sim: bool = False
    # The agent keeps the caps of its welcome itself (it holds a job until its
    # parts fit, counted when it asks its device to send): the bridge then
    # counts a push from when its frame left, without a margin. Absent: false.
    keeps_caps: bool = False

    @classmethod
    def from_json(cls, obj: Any) -> Capabilities:
        obj = _obj(obj, "hello.capabilities")
        # An absent capability has its default (not getattr(cls, name): on a slotted
        # dataclass that is the slot's descriptor, which is true).
        return cls(**{f.name: bool(_get(obj, f.name, bool, "hello.capabilities", required=False,
                                        default=f.default))
                      for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Sim:
    slot: int
    number: str | None = None
    operator: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> Sim:
        obj = _obj(obj, "hello.sims[]")
        return cls(slot=_int(obj, "slot", "hello.sims[]", low=0, high=8),
                   number=_text(obj, "number", "hello.sims[]", required=False, limit=32),
                   operator=_text(obj, "operator", "hello.sims[]", required=False, limit=64))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the agent knows of one job: its last state as the agent saw it."""
    job_id: str
    state: str

    @classmethod
    def from_json(cls, obj: Any) -> LedgerEntry:
        obj = _obj(obj, "hello.ledger[]")
        state = _text(obj, "state", "hello.ledger[]", limit=16)
        if state not in AGENT_JOB_STATES:
            raise RemoteProtocolError(f"hello.ledger[]: unknown job state {state!r}")
        return cls(job_id=_text(obj, "job_id", "hello.ledger[]", limit=128), state=state)


# --------------------------------------------------------------------------
# Proof of the token: HMAC-SHA256 keyed with the SHA-256 of the token (what the
# bridge's store keeps of a paired token), over the device id and the nonce.


def token_key(token: str) -> bytes:
    """The HMAC key of a token: its SHA-256 (the bridge stores only this)."""
    return hashlib.sha256(token.encode()).digest()


def hello_proof(key: bytes, device_id: str, nonce: str) -> str:
    return hmac.new(key, f"simbridge-hello|{device_id}|{nonce}".encode(), hashlib.sha256).hexdigest()


def proof_ok(proof: str, key: bytes, device_id: str, nonce: str) -> bool:
    return hmac.compare_digest(proof.encode(), hello_proof(key, device_id, nonce).encode())


# --------------------------------------------------------------------------
# Messages.


@dataclass(frozen=True, slots=True)
class Challenge:
    type: ClassVar[str] = "challenge"
    nonce: str  # 32 random bytes, hex
    version: int = PROTOCOL_VERSION

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Challenge:
        w = "challenge"
        nonce = _text(obj, "nonce", w, limit=128)
        if len(nonce) < 32:
            raise RemoteProtocolError("challenge: nonce shorter than 32 characters")
        return cls(nonce=nonce, version=_int(obj, "version", w, low=1))


JOURNAL_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz-_")


def _journal_id(obj: dict[str, Any], where: str) -> str:
    value = _text(obj, "journal", where, required=False, limit=64) or ""
    if not set(value) <= JOURNAL_ID_CHARS:
        raise RemoteProtocolError(f"{where}: field 'journal' may hold only a-z, 0-9, '-' and '_'")
    return value


@dataclass(frozen=True, slots=True)
class Hello:
    type: ClassVar[str] = "hello"
    device_id: str
    proof: str  # hello_proof(token_key(token), device_id, challenge.nonce)
    version: int = PROTOCOL_VERSION
    agent: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    sims: tuple[Sim, ...] = ()
    window: int = 8
    ledger: tuple[LedgerEntry, ...] = ()
    timezone: str | None = None  # IANA zone of the device's clock, e.g. "Europe/Paris"
    # The agent journal's id, made at random with the journal: event ids and the
    # ledger belong to it. "" for an agent without one (older agents, journals
    # made before ids): the bridge then keys events by device and event id alone.
    journal: str = ""
    # An agent that keeps caps: its sends still inside its longest cap window, as
    # (seconds ago, parts), oldest first, at most MAX_SENT (the most recent). A bridge
    # that has counted nothing for the device (it has just started) counts these.
    sent: tuple[tuple[float, int], ...] = ()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Hello:
        w = "hello"
        return cls(
            device_id=_text(obj, "device_id", w, limit=64),
            proof=_text(obj, "proof", w, limit=128),
            version=_int(obj, "version", w, low=1),
            agent=_text(obj, "agent", w, required=False, limit=128) or "",
            capabilities=Capabilities.from_json(obj.get("capabilities", {})),
            sims=tuple(Sim.from_json(s) for s in _list(obj, "sims", w, limit=8)),
            window=_int(obj, "window", w, required=False, default=8, low=1, high=MAX_BATCH),
            ledger=tuple(LedgerEntry.from_json(e) for e in _list(obj, "ledger", w, limit=10_000)),
            timezone=_text(obj, "timezone", w, required=False, limit=64),
            journal=_journal_id(obj, w),
            sent=tuple(_sent_entry(e) for e in _list(obj, "sent", w, limit=MAX_SENT)),
        )


MAX_SENT = 2048  # hello.sent entries (a day cap of up to 2,048 single-part sends, whole)


def _sent_entry(value: Any) -> tuple[float, int]:
    """One ``hello.sent`` entry: ``[seconds ago (0 to a day), parts (1 to 255)]``."""
    if (not isinstance(value, list) or len(value) != 2 or isinstance(value[0], bool)
            or not isinstance(value[0], (int, float)) or not 0 <= value[0] <= 86_400
            or isinstance(value[1], bool) or not isinstance(value[1], int) or not 1 <= value[1] <= 255):
        raise RemoteProtocolError("hello.sent[]: must be [seconds ago (0 to 86400), parts (1 to 255)]")
    return float(value[0]), value[1]


@dataclass(frozen=True, slots=True)
class Caps:
    """A device's caps in SMS parts per sliding minute, hour and day (0: none),
    for an agent that keeps them (``Capabilities.keeps_caps``)."""
    per_minute: int = 0
    per_hour: int = 0
    per_day: int = 0

    @classmethod
    def from_json(cls, obj: Any) -> Caps:
        obj = _obj(obj, "welcome.caps")
        return cls(**{name: _int(obj, name, "welcome.caps", required=False, default=0, low=0)
                      for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class Welcome:
    type: ClassVar[str] = "welcome"
    device_id: str
    version: int = PROTOCOL_VERSION
    window: int = 8  # jobs the bridge will keep in flight at most (≤ hello.window)
    lease_s: float = 60.0  # a pushed job not begun within this many seconds must be rejected
    server_time: float = 0.0
    # The device's caps, for an agent to keep (optional: None, absent from the
    # frame, means no caps for the agent to keep; an older agent ignores it).
    caps: Caps | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Welcome:
        w = "welcome"
        caps = obj.get("caps")
        return cls(device_id=_text(obj, "device_id", w, limit=64), version=_int(obj, "version", w),
                   window=_int(obj, "window", w, low=1), lease_s=_number(obj, "lease_s", w),
                   server_time=_number(obj, "server_time", w),
                   caps=None if caps is None else Caps.from_json(caps))


@dataclass(frozen=True, slots=True)
class SendSms:
    kind: ClassVar[str] = "send_sms"
    job_id: str
    to: str
    text: str
    report: bool = False  # ask the network for a delivery report
    sim: int | None = None
    reference: str | None = None  # the client's id_sms_api, for the agent's logs and records
    # 0 to 2: an agent begins its waiting jobs highest first (a one-time code does not
    # wait behind a campaign the phone already holds). Absent from an older bridge: 1.
    priority: int = 1
    # True: the text holds a secret (a verification code). The agent keeps no
    # clear copy of it on disk: its journal holds the job without the text.
    # Absent (None) from an older bridge, and for every other job.
    secret: bool | None = None
    # Which dispatch of the job this is (1, 2, …: the bridge's count). The agent
    # says it again in the job's job_state events, so that a report of an earlier
    # dispatch (a rejection still in the outbox when the job came back) is not
    # taken for one of this dispatch. Absent from an older bridge.
    attempt: int | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SendSms:
        w = "jobs[send_sms]"
        return cls(job_id=_text(obj, "job_id", w, limit=128), to=_text(obj, "to", w, limit=32),
                   text=_text(obj, "text", w, limit=MAX_TEXT),
                   report=_get(obj, "report", bool, w, required=False, default=False),
                   sim=_int(obj, "sim", w, required=False, low=0, high=8),
                   reference=_text(obj, "reference", w, required=False, limit=128),
                   priority=_int(obj, "priority", w, required=False, default=1, low=0, high=2),
                   secret=_get(obj, "secret", bool, w, required=False) or None,
                   attempt=_int(obj, "attempt", w, required=False, low=1))


@dataclass(frozen=True, slots=True)
class Dial:
    kind: ClassVar[str] = "dial"
    job_id: str
    to: str
    hangup_after_s: float = 60.0
    sim: int | None = None
    priority: int = 2  # as SendSms's; the bridge queues calls at 2
    attempt: int | None = None  # as SendSms's

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Dial:
        w = "jobs[dial]"
        return cls(job_id=_text(obj, "job_id", w, limit=128), to=_text(obj, "to", w, limit=32),
                   hangup_after_s=_number(obj, "hangup_after_s", w, required=False, default=60.0),
                   sim=_int(obj, "sim", w, required=False, low=0, high=8),
                   priority=_int(obj, "priority", w, required=False, default=2, low=0, high=2),
                   attempt=_int(obj, "attempt", w, required=False, low=1))


Job = SendSms | Dial
JOB_KINDS: dict[str, type[SendSms] | type[Dial]] = {SendSms.kind: SendSms, Dial.kind: Dial}


@dataclass(frozen=True, slots=True)
class Jobs:
    type: ClassVar[str] = "jobs"
    jobs: tuple[Job, ...]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Jobs:
        jobs = []
        for item in _list(obj, "jobs", "jobs", required=True):
            item = _obj(item, "jobs[]")
            kind = JOB_KINDS.get(str(item.get("kind")))
            if kind is None:
                raise RemoteProtocolError(f"jobs[]: unknown job kind {item.get('kind')!r}")
            jobs.append(kind.from_json(item))
        return cls(jobs=tuple(jobs))


# Events: every one has an event_id, unique per device, and a time ``at``
# (Unix seconds, UTC). The agent keeps each in its outbox until acked.


@dataclass(frozen=True, slots=True)
class JobState:
    kind: ClassVar[str] = "job_state"
    event_id: str
    job_id: str
    state: str
    at: float
    reason: str | None = None
    parts: int | None = None  # SMS parts transmitted
    network_ref: str | None = None  # e.g. the modem's TP-MR list, for the logs
    attempt: int | None = None  # the job's ``attempt`` as pushed (absent: an older agent, or none was given)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> JobState:
        w = "events[job_state]"
        state = _text(obj, "state", w, limit=16)
        if state not in AGENT_JOB_STATES:
            raise RemoteProtocolError(f"{w}: unknown job state {state!r}")
        return cls(event_id=_text(obj, "event_id", w, limit=128), job_id=_text(obj, "job_id", w, limit=128),
                   state=state, at=_number(obj, "at", w),
                   reason=_text(obj, "reason", w, required=False, limit=512),
                   parts=_int(obj, "parts", w, required=False, low=0, high=255),
                   network_ref=_text(obj, "network_ref", w, required=False, limit=128),
                   attempt=_int(obj, "attempt", w, required=False, low=1))


@dataclass(frozen=True, slots=True)
class SmsReceived:
    kind: ClassVar[str] = "sms_received"
    event_id: str
    sender: str
    text: str
    at: float
    sim: int | None = None
    incomplete: bool = False  # a multipart message some parts of which never came

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SmsReceived:
        w = "events[sms_received]"
        return cls(event_id=_text(obj, "event_id", w, limit=128), sender=_text(obj, "sender", w, limit=32),
                   text=_text(obj, "text", w, limit=MAX_TEXT), at=_number(obj, "at", w),
                   sim=_int(obj, "sim", w, required=False, low=0, high=8),
                   incomplete=_get(obj, "incomplete", bool, w, required=False, default=False))


@dataclass(frozen=True, slots=True)
class CallEvent:
    kind: ClassVar[str] = "call_event"
    event_id: str
    direction: str  # incoming | outgoing | missed
    number: str
    at: float  # when the call started
    duration_s: float = 0.0
    job_id: str | None = None  # the dial job that placed an outgoing call

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CallEvent:
        w = "events[call_event]"
        direction = _text(obj, "direction", w, limit=16)
        if direction not in CALL_DIRECTIONS:
            raise RemoteProtocolError(f"{w}: unknown call direction {direction!r}")
        duration = _number(obj, "duration_s", w, required=False, default=0.0)
        if duration < 0:
            raise RemoteProtocolError(f"{w}: duration_s must not be negative")
        return cls(event_id=_text(obj, "event_id", w, limit=128), direction=direction,
                   number=_text(obj, "number", w, limit=32), at=_number(obj, "at", w),
                   duration_s=duration, job_id=_text(obj, "job_id", w, required=False, limit=128))


@dataclass(frozen=True, slots=True)
class CallNote:
    kind: ClassVar[str] = "call_note"
    event_id: str
    number: str
    text: str
    at: float

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CallNote:
        w = "events[call_note]"
        return cls(event_id=_text(obj, "event_id", w, limit=128), number=_text(obj, "number", w, limit=32),
                   text=_text(obj, "text", w, limit=MAX_TEXT), at=_number(obj, "at", w))


Event = JobState | SmsReceived | CallEvent | CallNote
EVENT_KINDS: dict[str, type[JobState] | type[SmsReceived] | type[CallEvent] | type[CallNote]] = {
    k.kind: k for k in (JobState, SmsReceived, CallEvent, CallNote)}


@dataclass(frozen=True, slots=True)
class Events:
    type: ClassVar[str] = "events"
    events: tuple[Event, ...]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Events:
        events = []
        for item in _list(obj, "events", "events", required=True):
            item = _obj(item, "events[]")
            kind = EVENT_KINDS.get(str(item.get("kind")))
            if kind is None:
                raise RemoteProtocolError(f"events[]: unknown event kind {item.get('kind')!r}")
            events.append(kind.from_json(item))
        return cls(events=tuple(events))


@dataclass(frozen=True, slots=True)
class Ack:
    type: ClassVar[str] = "ack"
    event_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Ack:
        ids = _list(obj, "event_ids", "ack", required=True, limit=10 * MAX_BATCH)
        if not all(isinstance(i, str) for i in ids):
            raise RemoteProtocolError("ack: event_ids must be strings")
        return cls(event_ids=tuple(ids))


@dataclass(frozen=True, slots=True)
class Status:
    type: ClassVar[str] = "status"
    at: float
    battery: int | None = None  # percent
    charging: bool | None = None
    signal: int | None = None  # percent (0-100); None when unknown
    network: str | None = None  # e.g. "registered", "roaming", "searching", "denied"
    operator: str | None = None
    technology: str | None = None  # GSM, UMTS, LTE…
    timezone: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Status:
        w = "status"
        return cls(at=_number(obj, "at", w),
                   battery=_int(obj, "battery", w, required=False, low=0, high=100),
                   charging=_get(obj, "charging", bool, w, required=False),
                   signal=_int(obj, "signal", w, required=False, low=0, high=100),
                   network=_text(obj, "network", w, required=False, limit=32),
                   operator=_text(obj, "operator", w, required=False, limit=64),
                   technology=_text(obj, "technology", w, required=False, limit=16),
                   timezone=_text(obj, "timezone", w, required=False, limit=64))


@dataclass(frozen=True, slots=True)
class NewCaps:
    """The device's caps changed (a reload): sent only to an agent that keeps
    caps (``Capabilities.keeps_caps``), which takes them in place of its
    welcome's. ``caps`` None: none to keep."""
    type: ClassVar[str] = "caps"
    caps: Caps | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NewCaps:
        caps = obj.get("caps")
        return cls(caps=None if caps is None else Caps.from_json(caps))


Message = Challenge | Hello | Welcome | Jobs | Events | Ack | Status | NewCaps
MESSAGE_TYPES: dict[str, type[Challenge] | type[Hello] | type[Welcome] | type[Jobs] | type[Events] | type[Ack]
                    | type[Status] | type[NewCaps]] = {
    m.type: m for m in (Challenge, Hello, Welcome, Jobs, Events, Ack, Status, NewCaps)}
AGENT_TO_BRIDGE = frozenset({Hello.type, Events.type, Status.type})
BRIDGE_TO_AGENT = frozenset({Challenge.type, Welcome.type, Jobs.type, Ack.type, NewCaps.type})


def answer(challenge: Challenge, *, device_id: str, token: str, **fields: Any) -> Hello:
    """The hello that answers ``challenge`` for a device holding ``token``."""
    return Hello(device_id=device_id, proof=hello_proof(token_key(token), device_id, challenge.nonce), **fields)


# --------------------------------------------------------------------------
# Encoding and decoding whole frames.


# Per message class: its field names and its ``kind`` (None for a class without one).
_FIELDS: dict[type, tuple[tuple[str, ...], str | None]] = {}


def _plain(value: Any) -> Any:
    """A message or part of one as plain JSON values: Nones left out, tuples
    as lists. (dataclasses.asdict deep-copies everything: far too slow for
    the hot path; so is a call per field: a string, number or boolean is
    taken as it is.)"""
    cls = type(value)
    shape = _FIELDS.get(cls)
    if shape is None:
        if not hasattr(cls, "__dataclass_fields__"):
            if isinstance(value, (list, tuple)):
                return [_plain(v) for v in value]
            return value
        kind = getattr(cls, "kind", None)
        shape = _FIELDS[cls] = (tuple(f.name for f in fields(cls)), kind if isinstance(kind, str) else None)
    names, kind = shape
    out = {}
    for name in names:
        v = getattr(value, name)
        if v is not None:
            t = type(v)
            out[name] = v if t is str or t is int or t is float or t is bool else _plain(v)
    if kind is not None:
        out["kind"] = kind
    return out


def to_json(message: Message) -> dict[str, Any]:
    body = _plain(message)
    body["type"] = message.type
    return body


def encode(message: Message) -> str:
    """The text frame for ``message``."""
    if type(message) not in MESSAGE_TYPES.values():
        raise LocalProtocolError(f"not a protocol message: {message!r}")
    frame = json.dumps(to_json(message), ensure_ascii=False, separators=(",", ":"))
    if len(frame) * 4 > MAX_FRAME_BYTES and len(frame.encode()) > MAX_FRAME_BYTES:
        raise FrameTooBig(f"frame of {len(frame)} characters is over {MAX_FRAME_BYTES} bytes")
    return frame


def encode_batches(make: Callable[[tuple[T, ...]], Message], items: Sequence[T], *,
                   max_items: int = MAX_BATCH // 4) -> list[str]:
    """``items`` as frames of ``make(batch)``, in order: at most ``max_items``
    each, and halved until every frame fits :data:`MAX_FRAME_BYTES` (many
    long texts would not fit one). One item alone always fits (a text is at
    most :data:`MAX_TEXT` characters); if not, that is our bug: FrameTooBig."""
    frames: list[str] = []
    for start in range(0, len(items), max_items):
        pending = [items[start:start + max_items]]
        while pending:
            chunk = pending.pop()
            try:
                frames.append(encode(make(tuple(chunk))))
            except FrameTooBig:
                if len(chunk) == 1:
                    raise
                middle = len(chunk) // 2
                pending += [chunk[middle:], chunk[:middle]]  # the first half goes out first
    return frames


def decode(frame: str | bytes, *, allowed: frozenset[str] | None = None) -> Message:
    """Parse one frame. ``allowed`` limits the types accepted (the bridge
    passes :data:`AGENT_TO_BRIDGE`, agents :data:`BRIDGE_TO_AGENT`).

    Raises :class:`RemoteProtocolError` saying what is wrong.
    """
    if isinstance(frame, bytes):
        raise RemoteProtocolError("binary frames are not part of the protocol")
    if len(frame) > MAX_FRAME_BYTES:
        raise RemoteProtocolError(f"frame over {MAX_FRAME_BYTES} bytes")
    try:
        obj = json.loads(frame)
    except ValueError as exc:
        raise RemoteProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("frame must be a JSON object")
    kind = obj.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None or (allowed is not None and kind not in allowed):
        raise RemoteProtocolError(f"unknown frame type {kind!r}")
    return cls.from_json(obj)


def event_to_json(event: Event) -> dict[str, Any]:
    """One event as a plain object (what agents keep in their outbox files)."""
    return _plain(event)


def event_from_json(obj: dict[str, Any]) -> Event:
    """Inverse of :func:`event_to_json`."""
    kind = EVENT_KINDS.get(str(obj.get("kind")))
    if kind is None:
        raise RemoteProtocolError(f"unknown event kind {obj.get('kind')!r}")
    return kind.from_json(obj)


def job_to_json(job: Job) -> dict[str, Any]:
    return _plain(job)


def job_to_journal(job: Job) -> dict[str, Any]:
    """The job as an agent's journal keeps it: a secret job without its text
    (``text`` empty, ``secret`` true). Nothing after a restart needs that
    text: a job not begun is rejected (the bridge pushes it again with its
    text), one begun is settled by what the device saw, never sent again."""
    obj = _plain(job)
    if getattr(job, "secret", None):
        obj["text"] = ""
    return obj


def job_from_json(obj: dict[str, Any]) -> Job:
    kind = JOB_KINDS.get(str(obj.get("kind")))
    if kind is None:
        raise RemoteProtocolError(f"unknown job kind {obj.get('kind')!r}")
    return kind.from_json(obj)
