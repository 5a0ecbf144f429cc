"""Webhook delivery from the durable outbox.

The store records every event the upstream CRM is owed in its ``outbox``
table, in the same transaction as the change that raised it. The
:class:`WebhookDeliverer` here claims those events, has them formatted
(``forms.py``: one formatter per ``webhook_format``), sends them
(``http.py``) and records the outcome back in the store:

- Delivery is at-least-once: an event is marked delivered only after a 2xx
  answer. Anything else — another status, a redirect of a POST, a timeout, a
  broken connection, or an exception of any kind while formatting or sending
  that one event — fails that attempt of that event only: it is retried with
  exponential backoff and jitter until ``[webhooks] max_age`` after it was
  recorded, then marked dead with its last error. An event its form can never
  carry (:class:`~bridge.webhooks.forms.Unrenderable`) is dead at once.
- Order: events with the same ``order_key`` (one outgoing message, one
  device's inbound SMS, …) go strictly in the order they were recorded: the
  store only hands out the first undelivered event of each key. Different keys
  go in parallel, so one event being retried holds back only the later events
  of its own key.
- A receiver that fails with a connection error, a timeout, 429 or 5xx pauses
  its whole account (with backoff) instead of being hammered; when it answers
  again every event of that account that was waiting is due at once.

See docs/webhooks.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from bridge.config import AccountConfig, Config
from bridge.webhooks.forms import Unrenderable, build_request
from bridge.webhooks.http import HttpTransport, SendError
from bridge.webhooks.outbox import OutboxRow, Store

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300
ACCOUNT_PAUSE_MAX = 60.0  # a receiver that is down is tried again at least this often
CLAIM_AHEAD = 16  # events claimed and not yet settled: at most this many per request in flight
SETTLE_LINGER = 0.05  # seconds an outcome may wait to be recorded with others (while others are in flight)


def backoff(attempts: int, *, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay after failed attempt number ``attempts``: doubling from ``initial``,
    capped, with "equal jitter" (half fixed, half random) so retries spread out."""
    delay = min(cap, initial * 2 ** min(max(0, attempts - 1), 64))
    return delay / 2 + (rng or random).random() * delay / 2


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


@dataclass(slots=True)
class WebhookStats:
    """Plain counters, for metrics exporters to read."""
    delivered: int = 0  # events answered 2xx
    failed_attempts: int = 0  # attempts that were not (each is retried or the event dies)
    dead: int = 0  # events given up on
    requests: int = 0  # HTTP requests made
    request_seconds: float = 0.0  # sum of request durations
    latency_seconds: float = 0.0  # sum over delivered events of (delivered - recorded)
    latency_max: float = 0.0
    claimed: int = 0

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(slots=True)
class _AccountHealth:
    failures: int = 0  # consecutive receiver failures
    paused_until: float = 0.0  # wall clock


@dataclass(slots=True)
class _Batch:
    """Outcomes not yet recorded in the store (handed to ``settle_outbox`` together)."""
    delivered: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    retry: list[tuple[int, float, str]] = dataclasses.field(default_factory=list)
    dead: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    release: list[int] = dataclasses.field(default_factory=list)
    recovered: list[str] = dataclasses.field(default_factory=list)
    # Counted in the stats when the batch goes to the store (a reader of the
    # stats then finds the store saying the same).
    latencies: list[float] = dataclasses.field(default_factory=list)
    failed_attempts: int = 0
    size: int = 0

    def ids(self) -> list[int]:
        return ([i for i, _ in self.delivered] + [i for i, _, _ in self.retry] + [i for i, _ in self.dead]
                + self.release)


class WebhookDeliverer:
    """Pushes outbox events to the accounts' webhooks. Start :meth:`run` as a task.

    One task talks to the store (:meth:`_store_loop`): it claims due events in
    big batches and records the outcomes of many attempts in one call, so that
    the store sees a few transactions a second, not one per event. Between the
    two, everything runs in loop callbacks without a task per event: a claimed
    event is formatted and handed to the transport (:meth:`_begin`), whose
    answer is judged (:meth:`_answered`) and kept for the next settle
    (:meth:`_record`), and the next event starts at once (:meth:`_pump`).
    """

    def __init__(self, *, config: Config, store: Store, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.stats = WebhookStats()
        self.rng = rng or random.Random()
        self._zone = ZoneInfo(config.api.timezone)
        self._by_login = self._accounts()
        self._size()
        self._wake = asyncio.Event()
        self._poke_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: collections.deque[OutboxRow] = collections.deque()  # claimed, not attempted yet
        self._outstanding: dict[int, OutboxRow] = {}  # claimed, not settled yet
        self._active = 0  # requests in flight
        self._batch = _Batch()
        self._storing: asyncio.Future[list[OutboxRow]] | None = None  # a settle and claim on its way
        self._stored = _Batch()  # what it settles
        self._linger: asyncio.TimerHandle | None = None
        self._drained = False  # the last claim found nothing more due
        self._health: dict[str, _AccountHealth] = {}
        self._transport: HttpTransport | None = None
        self.running = asyncio.Event()

    def reload(self, config: Config) -> None:
        self.config = config
        self._zone = ZoneInfo(config.api.timezone)
        self._by_login = self._accounts()
        self._size()
        if self._transport is not None:
            self._transport.timeout = config.webhooks.timeout
        self.wake()

    # -- sizes --------------------------------------------------------------------

    def _size(self) -> None:
        concurrency = self.config.webhooks.concurrency
        self._concurrency = concurrency
        self._capacity = max(concurrency * CLAIM_AHEAD, 64)  # events claimed and not settled, at most
        self._low_water = concurrency * 2  # claim more when fewer than this wait to be sent
        # Outcomes are recorded in the store once this many have gathered (or
        # nothing else is in flight, or after SETTLE_LINGER).
        self._settle_size = max(self._capacity // 4, 1)

    # -- waking -------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the outbox now (call on the event loop)."""
        self._drained = False
        self._wake.set()

    def _poke(self) -> None:
        """The store's listener: any thread, called once per recorded event."""
        if self._poke_pending or self._loop is None:
            return
        self._poke_pending = True
        try:
            self._loop.call_soon_threadsafe(self._poked)
        except RuntimeError:  # loop closed
            self._poke_pending = False

    def _poked(self) -> None:
        self._poke_pending = False
        self.wake()

    # -- accounts -------------------------------------------------------------------

    def _accounts(self) -> dict[str, AccountConfig]:
        return {a.login: a for a in self.config.accounts if a.webhook_url}

    def _open_accounts(self, now: float) -> list[str]:
        return [login for login in self._by_login
                if self._health.get(login) is None or self._health[login].paused_until <= now]

    def _paused(self, login: str, now: float) -> bool:
        health = self._health.get(login)
        return health is not None and health.paused_until > now

    # -- the task -------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config.webhooks
        self._loop = asyncio.get_running_loop()
        self.store.set_outbox_listener(self._poke)
        try:
            async with HttpTransport(concurrency=cfg.concurrency, timeout=cfg.timeout) as transport:
                self._transport = transport
                self.running.set()
                try:
                    await self._store_loop()
                finally:
                    self._transport = None  # what is still in flight is answered CancelledError: released
        finally:
            self.running.clear()
            self._transport = None
            self.store.set_outbox_listener(None)
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            await self._give_back()

    async def _give_back(self) -> None:
        """On the way out: record what was done, and hand back what was not, so a
        restart delivers it at once rather than after the lease."""
        if self._storing is not None:  # a settle and claim on its way: what it leased is handed back too
            with contextlib.suppress(BaseException):
                for row in await asyncio.shield(self._storing):
                    self._outstanding.setdefault(row.id, row)
            self._storing = None
            for row_id in self._stored.ids():  # recorded (or as good as: sent again after their lease)
                self._outstanding.pop(row_id, None)
        batch, self._batch = self._batch, _Batch()
        self._ready.clear()
        done = set(batch.ids())
        batch.release.extend(row_id for row_id in self._outstanding if row_id not in done)
        if batch.ids():
            try:
                await asyncio.shield(self._ship(batch))
            except Exception:
                log.warning("could not record the last webhook outcomes; they will be sent again", exc_info=True)
        self._outstanding.clear()

    async def _store_loop(self) -> None:
        """Records outcomes and claims events: one store round trip for many events."""
        cfg = self.config.webhooks
        while True:
            self._wake.clear()
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            now = time.time()
            accounts = self._open_accounts(now)
            batch = self._batch
            capacity = self._capacity
            free = capacity - len(self._outstanding) + batch.size  # the settled ones leave
            claim = 0
            if accounts and free > 0 and (free >= capacity // 4 or len(self._ready) < self._low_water):
                claim = free
            worked = bool(batch.size or claim)
            if worked:
                self._batch = _Batch()
                self._storing = asyncio.ensure_future(self._ship(batch, accounts, claim, now))
                self._stored = batch
                try:
                    rows = await asyncio.shield(self._storing)
                finally:
                    if self._storing.done():
                        self._storing = None
                for row_id in batch.ids():
                    self._outstanding.pop(row_id, None)
                if claim:
                    self._drained = len(rows) < claim
                    for row in rows:
                        if row.id in self._outstanding:
                            continue  # its lease ran out while we still hold it
                        self._outstanding[row.id] = row
                        self.stats.claimed += 1
                        self._ready.append(row)
                    self._pump()
            if worked and (self._wake.is_set() or self._ripe()):
                continue
            # Retries (ours, or an earlier run's) are in the store: sleep until the
            # first is due, a paused account may be tried again, or something wakes us.
            deadline = now + cfg.poll_interval
            if accounts and self._drained and not self._ready and not self._active and not self._wake.is_set():
                due = await self.store.next_outbox_due(accounts, now=now)
                if due is not None:
                    deadline = min(deadline, due)
            for health in self._health.values():
                if health.paused_until > now:
                    deadline = min(deadline, health.paused_until)
            await self._sleep(deadline - time.time())

    def _ripe(self) -> bool:
        """Outcomes to record now: enough of them, or nothing else going on."""
        size = self._batch.size
        return size > 0 and (size >= self._settle_size or (not self._active and not self._ready))

    async def _sleep(self, delay: float) -> None:
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    # -- sending, in loop callbacks -------------------------------------------------------

    def _pump(self) -> None:
        """Start waiting events while there is room."""
        limit = self._concurrency
        ready = self._ready
        while self._active < limit and ready:
            self._begin(ready.popleft())
        if len(ready) < self._low_water and not self._drained:
            self._wake.set()  # claim more

    def _begin(self, row: OutboxRow) -> None:
        now = time.time()
        account = self._by_login.get(row.account)
        if account is None:
            # Its webhook was removed from the config: keep the event for when it comes back.
            self._record_release(row)
            return
        if self._health and self._paused(row.account, now):
            self._record_release(row)
            return
        try:
            request = build_request(row, account, self._zone, now=now)
        except Unrenderable as exc:
            self._record_dead(row, _short(str(exc)))
            return
        except Exception as exc:  # a payload the formatter chokes on: this event only, retried
            first = row.attempts == 0  # logged once (with the traceback), then quietly
            log.log(logging.WARNING if first else logging.DEBUG,
                    "webhook event %d (%s) of account %s could not be formatted (%s); retrying",
                    row.id, row.kind, row.account, type(exc).__name__, exc_info=first)
            self._record_retry(row, f"formatting failed: {type(exc).__name__}", False)
            return
        transport = self._transport
        if transport is None:
            self._record_release(row)
            return
        self.stats.requests += 1
        self._active += 1
        try:
            transport.submit(request, functools.partial(self._answered, row, request.method, time.monotonic()))
        except Exception as exc:  # the transport's fault: this event only, retried
            self._active -= 1
            self._failed_to_send(row, exc)

    def _answered(self, row: OutboxRow, method: str, started: float, result: int | BaseException) -> None:
        """The transport's callback: judge the answer, keep the outcome, start the next event."""
        self._active -= 1
        self.stats.request_seconds += time.monotonic() - started
        try:
            self._judge(row, method, result)
        except Exception as exc:  # a fault of ours: that event is retried, the others go on
            log.error("webhook event %d of account %s: unexpected %s; retrying", row.id, row.account,
                      type(exc).__name__, exc_info=True)
            self._record_retry(row, _short(f"internal error: {type(exc).__name__}"), False)
        self._pump()

    def _judge(self, row: OutboxRow, method: str, result: int | BaseException) -> None:
        if isinstance(result, int):
            if 200 <= result < 300:
                self._record_delivered(row)
                return
            error = f"HTTP {result}"
            if 300 <= result < 400:
                error += (" (a POST is not redirected: set webhook_url to the final URL)" if method != "GET"
                          else " (redirect without a usable Location)")
            self._record_retry(row, _short(error), result >= 500 or result == 429)
        elif isinstance(result, asyncio.CancelledError):  # the transport closed under it: not attempted
            self._record_release(row)
        elif isinstance(result, TimeoutError):
            transport = self._transport
            timeout = transport.timeout if transport is not None else self.config.webhooks.timeout
            self._record_retry(row, f"no answer within {timeout:g} s", True)
        elif isinstance(result, SendError):
            self._record_retry(row, _short(str(result)), result.receiver_down)
        else:  # anything else from the transport: this event only, retried
            self._failed_to_send(row, result)

    def _failed_to_send(self, row: OutboxRow, exc: BaseException) -> None:
        first = row.attempts == 0
        log.log(logging.WARNING if first else logging.DEBUG,
                "webhook event %d (%s) of account %s: sending failed (%s); retrying", row.id, row.kind,
                row.account, type(exc).__name__, exc_info=(type(exc), exc, exc.__traceback__) if first else None)
        self._record_retry(row, f"sending failed: {type(exc).__name__}", False)

    # -- outcomes, kept for the next settle ---------------------------------------------------

    def _recorded(self) -> None:
        batch = self._batch
        batch.size += 1
        if self._ripe():
            self._wake.set()
        elif self._linger is None and self._loop is not None:
            self._linger = self._loop.call_later(SETTLE_LINGER, self._wake.set)

    def _record_delivered(self, row: OutboxRow) -> None:
        at = time.time()
        batch = self._batch
        batch.delivered.append((row.id, at))
        batch.latencies.append(at - row.created)
        health = self._health.get(row.account) if self._health else None
        if health is not None and (health.failures or health.paused_until):
            log.info("webhook of account %s answers again; sending what waited", row.account)
            health.failures, health.paused_until = 0, 0.0
            if row.account not in batch.recovered:
                batch.recovered.append(row.account)
        self._recorded()

    def _record_release(self, row: OutboxRow) -> None:
        self._batch.release.append(row.id)
        self._recorded()

    def _record_dead(self, row: OutboxRow, error: str) -> None:
        self._batch.dead.append((row.id, error))
        log.warning("webhook event %d (%s) of account %s dropped: %s", row.id, row.kind, row.account, error)
        self._recorded()

    def _record_retry(self, row: OutboxRow, error: str, account_failure: bool) -> None:
        cfg = self.config.webhooks
        now = time.time()
        batch = self._batch
        batch.failed_attempts += 1
        attempts = row.attempts + 1
        if now - row.created >= cfg.max_age:
            batch.dead.append((row.id, error))
            log.warning("webhook event %d (%s) of account %s dead after %d attempts over %.0f s: %s",
                        row.id, row.kind, row.account, attempts, now - row.created, error)
            self._recorded()
            return
        at = min(now + backoff(attempts, initial=cfg.backoff_initial, cap=cfg.backoff_max, rng=self.rng),
                 row.created + cfg.max_age)
        batch.retry.append((row.id, at, error))
        if account_failure:
            health = self._health.setdefault(row.account, _AccountHealth())
            if health.paused_until <= now:  # else the same outage, seen by another request of the same round
                health.failures += 1
                if health.failures == 1:
                    log.warning("webhook of account %s failed (%s); retrying with backoff", row.account, error)
                else:
                    log.debug("webhook of account %s failed again (%s)", row.account, error)
                pause = backoff(health.failures, initial=cfg.backoff_initial,
                                cap=min(cfg.backoff_max, ACCOUNT_PAUSE_MAX), rng=self.rng)
                health.paused_until = max(health.paused_until, now + pause)
                self._wake.set()  # record it now: the account's other events wait in the store, not here
        else:
            log.info("webhook event %d of account %s refused (%s); retrying", row.id, row.account, error)
        self._recorded()

    async def _ship(self, batch: _Batch, accounts: Sequence[str] = (), claim: int = 0,
                    now: float | None = None) -> list[OutboxRow]:
        """Record ``batch`` in the store, then claim up to ``claim`` due events of
        ``accounts``, in one transaction; the stats count the batch once it is
        recorded (what they say delivered, the store says too)."""
        rows = await self.store.settle_and_claim(
            accounts, claim, lease_s=self.config.webhooks.lease, delivered=batch.delivered, retry=batch.retry,
            dead=batch.dead, release=batch.release, recovered=batch.recovered, now=now or time.time())
        stats = self.stats
        stats.delivered += len(batch.delivered)
        for latency in batch.latencies:
            stats.latency_seconds += latency
            if latency > stats.latency_max:
                stats.latency_max = latency
        stats.failed_attempts += batch.failed_attempts
        stats.dead += len(batch.dead)
        return rows
