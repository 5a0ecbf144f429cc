"""The store's doors: one small :class:`typing.Protocol` per concern, so that
each caller depends only on what it uses and a second backend (PostgreSQL)
can be written one concern at a time.

Every coroutine is one transaction: it happens whole or not at all, so a crash
at any point loses nothing that was answered as accepted. The contract tests
(tests/store_contract/) say what each door promises, for every backend.

=============  ===========================================================
``JobQueue``    outgoing jobs: enqueue, claim, agents' events, requeue,
                expiry, reading a job and its history
``Outbox``      the webhook events recorded with the changes that raised
                them: claim, settle, listen
``Records``     inbound SMS, calls, call notes, contacts, opt-outs, tracked
                links and their clicks, the message list
``Codes``       verification codes (hashed) and the SMS that carries each
``DeviceAuth``  pairing tokens of devices and their revocation
``ApiTokens``   the API's own tokens (SMSFLOW's), hashed, and their revocation
``Presence``    the daemons on one database and the devices each drives
``Upkeep``      retention and the counters' folding
``Lifecycle``   open, close, ping
``Store``       all of them: for the composition root (the daemon) only
=============  ===========================================================

What the store does *not* decide is which events an account is sent: it asks
the :class:`EventFilter` it is given (``bridge.webhooks.policy``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from bridge.core.optout import Keywords
from bridge.store.model import (
    Contact,
    Enqueued,
    EventOutcome,
    Job,
    Link,
    NewJob,
    OutboxEntry,
    OutboxEvent,
    OutboxRow,
    VerificationCode,
)
from device_agents import protocol


class EventFilter(Protocol):
    """Which webhook events an account is sent (given to the store's constructor)."""

    def wants(self, account: str, kind: str) -> bool: ...


class Lifecycle(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """A trivial query: the store answers (the service watchdog asks)."""


class JobQueue(Protocol):
    """Outgoing jobs, from acceptance to their final state. Every state change
    goes through ``bridge.core.jobstates`` and is kept in the job's history."""

    def set_queue_listener(self, callback: Callable[[str], None] | None) -> None:
        """``callback(account)`` is called when the account's queue may have
        work for its devices (jobs enqueued or given back), by this process
        or, on a shared database, by another daemon; ``account`` "" means
        any. Called on the event loop's thread; it must be cheap."""

    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]:
        """One :class:`Enqueued` per job, in order. A client-supplied
        ``id_sms_api`` is an idempotency key per account: a job sent again
        (or twice in one batch) returns the first one, ``created`` False."""

    async def claim(self, account: str, device_id: str, limit: int, *,
                    kinds: tuple[str, ...] = ("sms", "call"), max_parts: int | None = None,
                    avoid: Collection[str] = (), sticky: bool = False, min_priority: int = 0,
                    journal: str = "") -> list[Job]:
        """Up to ``limit`` due, unexpired queued jobs of ``account`` — priority
        2 before 1 before 0, then due date, then arrival — now dispatched to
        ``device_id``. The jobs are returned as they were before the claim.
        Concurrent claims never share a job.

        ``max_parts``: only the jobs, in that order, whose parts add up to at
        most this (the first that does not fit ends the claim: nothing behind
        it jumps the queue). ``avoid``: skip jobs whose recipient's sender (see
        ``sticky``) is one of these devices. ``sticky``: record ``device_id``
        as the sender of every claimed job's recipient (per account).
        ``min_priority``: only jobs of at least this priority. ``journal``: the
        device agent's journal id (``protocol.Hello.journal``), kept with each
        job (see ``reconcile``)."""

    async def defer(self, device_id: str, job_ids: Collection[int], until: float, *, reason: str) -> int:
        """Give jobs this device claimed and has not been sent back to the
        queue, due at ``until``, as if never claimed (their attempt is not
        counted). Returns how many moved."""

    async def next_due(self, account: str) -> float | None:
        """The earliest due date among the account's queued jobs."""

    async def apply_events(self, device_id: str, account: str, events: Iterable[protocol.Event], *,
                           max_attempts: int = 5, journal: str = "") -> EventOutcome:
        """Store what a device reports (job states, inbound SMS, calls, call
        notes), each event once per (device, journal, event id) (``journal``:
        ``protocol.Hello.journal``). A job report names the job by its wire id
        (``Job.job_id``): one of another incarnation of the store is unknown."""

    async def reconcile(self, device_id: str, journal: str,
                        ledger: Iterable[protocol.LedgerEntry]) -> list[Job]:
        """A device said hello with this journal and ledger. Its jobs that were
        pushed to another journal of it (reinstalled, replaced) and that the
        ledger does not know become ``unconfirmed`` (they may have been sent;
        never sent again); its jobs only waiting for its link (``strand_device``)
        are its again (``dispatched``). Returns the jobs dispatched to it that
        the ledger does not know: the agent never got them, so they are pushed
        again (same job id)."""

    async def strand_device(self, device_id: str, dispatched_before: float, *, reason: str) -> int:
        """The device's link has been down too long: its jobs dispatched before
        that time become ``unconfirmed`` with ``reason`` (it may have sent them;
        no other device ever gets them), until its agent says hello again
        (``reconcile``) and settles them. How many."""

    async def in_flight(self, device_id: str) -> list[Job]:
        """The jobs dispatched to the device and not yet answered, oldest first."""

    async def devices_in_flight(self) -> list[str]:
        """Devices that hold dispatched jobs (configured or not any more)."""

    async def expire(self, now: float | None = None) -> int:
        """Expire queued jobs whose ttl ran out; how many."""

    async def next_expiry(self) -> float | None:
        """When the first queued job's ttl runs out (any account), or None."""

    async def get_job(self, account: str, id_sms_api: str) -> Job | None: ...

    async def get_job_by_id(self, account: str, job_id: int) -> Job | None:
        """The account's job with that number (``Job.id``)."""

    async def history(self, job_id: int) -> list[dict[str, Any]]:
        """The job's states in order: ``state``, ``at``, ``device_id``, ``reason``."""

    async def counts(self, account: str | None = None) -> dict[tuple[str, int], int]:
        """Jobs by (state, priority), of one account or (None) of all."""

    async def cancel(self, account: str, id_sms_api: str, *, reason: str) -> Job | None:
        """Withdraw a ``queued`` job of ``account`` (state ``cancelled``
        through the state table, one history line with ``reason``). Returns the
        job as it now is: ``cancelled``, or unchanged in the state that kept it
        from being cancelled; None when the account has no such job."""

    async def find_jobs(self, account: str | None, *, states: Iterable[str] = (), search: str = "",
                        limit: int = 100) -> list[Job]:
        """Jobs of ``account`` (None: every account), newest first; only those
        in ``states`` when given; ``search`` matches the ``id_sms_api``
        exactly or is a part of the phone number."""

    async def sent_counts(self, since: float) -> dict[str, int]:
        """Per device: jobs that reached ``sent`` at or after ``since``."""


class Outbox(Protocol):
    """The webhook events, recorded in the same transaction as the change
    that raised them, delivered at least once and in order per ``order_key``."""

    def set_outbox_listener(self, callback: Callable[[], None] | None) -> None:
        """``callback()`` is called, from any thread, whenever an event is
        recorded in the outbox. It must be cheap and thread-safe."""

    async def record_events(self, events: Iterable[OutboxEvent], *, at: float | None = None) -> int:
        """Record events the filter lets through, in one transaction; how many."""

    async def claim_outbox(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                           now: float | None = None) -> list[OutboxRow]:
        """Up to ``limit`` due events of ``accounts``, oldest due first, each the
        first undelivered, live event of its (account, order_key): a later event
        of a key waits while an earlier one is in flight or retrying. Claimed
        events are leased: not due again for ``lease_s`` unless settled."""

    async def settle_outbox(self, *, delivered: Iterable[tuple[int, float]] = (),
                            retry: Iterable[tuple[int, float, str]] = (),
                            dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                            recovered: Iterable[str] = (), now: float | None = None) -> None:
        """Record delivery outcomes in one transaction: ``delivered`` (id, at);
        ``retry`` (id, next attempt, error), which also holds back the later
        events of its key; ``dead`` (id, error); ``release`` ids claimed but not
        attempted (due again now); ``recovered`` accounts whose receiver answers
        again (their retrying events are due now)."""

    async def settle_and_claim(self, accounts: Iterable[str], limit: int, *, lease_s: float,
                               delivered: Iterable[tuple[int, float]] = (),
                               retry: Iterable[tuple[int, float, str]] = (),
                               dead: Iterable[tuple[int, str]] = (), release: Iterable[int] = (),
                               recovered: Iterable[str] = (), now: float | None = None) -> list[OutboxRow]:
        """:meth:`settle_outbox` then :meth:`claim_outbox`, both at ``now``, in
        one transaction: the claim sees the outcomes just recorded (the next
        event of a key just delivered is handed out at once). The deliverer's
        one store round trip for many events."""

    async def next_outbox_due(self, accounts: Iterable[str], now: float | None = None) -> float | None:
        """The earliest future ``next_attempt`` among undelivered live events."""

    async def outbox_counts(self) -> dict[str, int]:
        """``pending``, ``delivered``, ``dead`` events in the outbox."""

    async def outbox(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Recorded events, oldest first (``id``, ``account``, ``kind``,
        ``order_key``, ``payload``, ``delivered_at``)."""

    async def outbox_entries(self, account: str, *, undelivered: bool = True,
                             limit: int = 200) -> list[OutboxEntry]:
        """The account's events, newest first, with their delivery state
        (only the undelivered ones — pending, retrying, dead — by default)."""

    async def dead_letters(self, account: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Dead events (given up on), oldest first: ``id``, ``account``, ``kind``,
        ``order_key``, ``payload``, ``created``, ``attempts``, ``last_error``."""

    async def replay_dead(self, account: str | None = None, ids: Iterable[int] | None = None, *,
                          now: float | None = None) -> int:
        """Make dead events of ``account`` (all accounts: None; only ``ids``
        when given) live again, due now, with a fresh age and no attempts, in
        one transaction; how many. The outbox listener is called when any is."""


class Records(Protocol):
    """What the API and the devices record besides jobs."""

    def set_opt_out(self, keywords: Keywords, default_region: str | None = None) -> None:
        """The stop/start words that incoming SMS are matched against, and the
        region that reads senders written without a country code."""

    async def opted_out(self, account: str, numbers: Iterable[str]) -> set[str]:
        """Those of ``numbers`` (E.164) that asked the account to stop."""

    async def upsert_contacts(self, account: str, contacts: list[Contact]) -> list[bool]:
        """Create or update by number; True for each contact that is new."""

    async def contacts(self, account: str, limit: int = 1000) -> list[Contact]: ...

    async def click(self, code: str, *, user_agent: str | None = None, ip: str | None = None) -> Link | None:
        """Record a click on a tracked link and raise its ``link_clicked``
        event; None for an unknown code."""

    async def link(self, code: str) -> Link | None:
        """A tracked link by its code, without recording anything."""

    async def links(self, account: str, id_sms_api: str) -> list[Link]: ...

    async def add_call_note(self, account: str, number: str, text: str, *, source: str = "interface") -> int:
        """Record a call qualification and raise its ``call_qualification`` event."""

    async def messages(self, account: str, *, direction: str | None = None,
                       status: str | Sequence[str] | None = None, take: int = 50,
                       skip: int = 0, cursor: str | None = None) -> list[dict[str, Any]]:
        """Outgoing SMS jobs (``direction`` "out") and inbound SMS ("in"),
        newest first. ``status``: a job state or several (any of them);
        "received" among them also selects the inbound SMS. Each row has
        ``job_id`` (outgoing) or ``inbound_id`` (inbound), the record's number,
        and its ``cursor``: the next page starts after the row whose cursor is
        given (keyset, ``bridge.store.paging``; a cursor not of this list is a
        ValueError); ``skip`` rows are skipped after that."""

    async def get_inbound(self, account: str, inbound_id: int) -> dict[str, Any] | None: ...

    async def inbound(self, account: str, limit: int = 100) -> list[dict[str, Any]]: ...

    async def calls(self, account: str, limit: int = 100) -> list[dict[str, Any]]: ...

    async def last_activity(self, account: str) -> float:
        """When anything of the account's messages last changed (a job's
        state, an inbound SMS); 0 when nothing ever did."""


class Codes(Protocol):
    async def create_code(self, account: str, number: str, *, salt: bytes, digest: bytes, ttl_s: float,
                          max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]:
        """A verification code (hashed) and the SMS job that carries it, together."""

    async def live_code(self, account: str, number: str, code_id: int | None = None) -> VerificationCode | None:
        """The newest pending, unexpired code with tries left for ``number``."""

    async def use_code_try(self, code_id: int) -> VerificationCode | None:
        """Spend one try of a live code; None when it has none left (or is
        verified or expired). The try is spent before the comparison."""

    async def finish_code(self, code_id: int, *, verified: bool) -> bool:
        """After a try: ``verified`` marks it used (True if it was still
        pending); otherwise it dies when no try is left."""

    async def codes(self, account: str, *, code_id: int | None = None, take: int = 50,
                    skip: int = 0) -> list[VerificationCode]: ...


class DeviceAuth(Protocol):
    """Pairing tokens (``simbridge pair``), kept only as their SHA-256."""

    async def add_device_token(self, device_id: str, digest: str) -> None: ...

    async def revoke_device(self, device_id: str, *, bump_generation: bool) -> int:
        """Revoke every pairing token of the device (returns how many); with
        ``bump_generation`` its derived token changes too."""

    async def device_auth(self, device_id: str) -> tuple[frozenset[str], int]:
        """The live pairing-token digests of a device, and its derived-token generation."""


class ApiTokens(Protocol):
    """Tokens handed out by the API (SMSFLOW's ``get_token_auth``), kept only as
    their SHA-256 (hex), each with its account, the username that asked for
    it and when it expires."""

    async def add_api_token(self, digest: str, account: str, username: str, expires: float) -> None: ...

    async def api_token(self, digest: str, *, now: float | None = None) -> tuple[str, str] | None:
        """``(account, username)`` of a live token (not revoked, not expired), else None."""

    async def revoke_api_tokens(self, *, digest: str | None = None, username: str | None = None) -> int:
        """Revoke the token with that digest, or every token of that username; how many."""


class Presence(Protocol):
    """Several daemons on one database: each publishes its heartbeat and the
    devices it drives; every one reads them all."""

    async def publish_presence(self, node: str, devices: Iterable[tuple[str, str, bool, dict[str, Any]]], *,
                               api_url: str = "", now: float | None = None) -> None:
        """``node``'s heartbeat, and its devices: (device id, account, online,
        the row ``simbridge devices`` shows). An offline row never hides the
        device online on another live node."""

    async def presence(self, *, stale_after: float, now: float | None = None,
                       other_than: str | None = None) -> list[dict[str, Any]]:
        """Every device row (``other_than``: but those of that node): ``device_id``,
        ``node``, ``account``, ``online`` (False when its node's heartbeat is older
        than ``stale_after`` s), ``seen``, ``node_alive``, ``info``."""


class Upkeep(Protocol):
    """History that does not slow the present: retention in small batches, off
    the hot path, and counters that a scrape reads instead of counting rows."""

    async def purge(self, before: float, *, limit: int = 500) -> int:
        """Delete up to ``limit`` each of: settled jobs (final, sent or
        unconfirmed) made and last changed before ``before``, with their
        history and links; delivered or dead webhook events recorded before
        it; agents' event ids seen before it. One short transaction; how many
        rows went (call again while it is not 0)."""

    async def fold_counters(self) -> None:
        """Fold the counters' deltas into one row each (keeps ``counts`` cheap)."""


class Store(Lifecycle, JobQueue, Outbox, Records, Codes, DeviceAuth, ApiTokens, Presence, Upkeep, Protocol):
    """Every door at once: what the composition root builds and hands out,
    each component typing it by the doors it uses."""
