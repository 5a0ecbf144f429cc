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
import dataclasses
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
class _Outcome:
    row: OutboxRow
    status: str  # "delivered" | "retry" | "dead" | "release"
    error: str = ""
    account_failure: bool = False  # the receiver itself is unwell (not just this event)
    at: float = 0.0


@dataclass(slots=True)
class _AccountHealth:
    failures: int = 0  # consecutive receiver failures
    paused_until: float = 0.0  # wall clock
    recovered: bool = False


class WebhookDeliverer:
    """Pushes outbox events to the accounts' webhooks. Start :meth:`run` as a task."""

    def __init__(self, *, config: Config, store: Store, rng: random.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.stats = WebhookStats()
        self.rng = rng or random.Random()
        self._zone = ZoneInfo(config.api.timezone)
        self._wake = asyncio.Event()
        self._poke_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[OutboxRow] = asyncio.Queue()
        self._outstanding: dict[int, OutboxRow] = {}  # claimed, not settled yet
        self._results: list[_Outcome] = []
        self._results_ready = asyncio.Event()
        self._health: dict[str, _AccountHealth] = {}
        self._transport: HttpTransport | None = None
        self.running = asyncio.Event()

    def reload(self, config: Config) -> None:
        self.config = config
        self._zone = ZoneInfo(config.api.timezone)
        if self._transport is not None:
            self._transport.timeout = config.webhooks.timeout
        self.wake()

    # -- waking -------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the outbox now (call on the event loop)."""
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
        self._wake.set()

    # -- accounts -------------------------------------------------------------------

    def _accounts(self) -> dict[str, AccountConfig]:
        return {a.login: a for a in self.config.accounts if a.webhook_url}

    def _open_accounts(self, now: float) -> list[str]:
        return [login for login in self._accounts()
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
            async with HttpTransport(concurrency=cfg.concurrency, timeout=cfg.timeout) as transport, \
                    asyncio.TaskGroup() as tg:
                self._transport = transport
                for _ in range(cfg.concurrency):
                    tg.create_task(self._worker())
                tg.create_task(self._settler())
                self.running.set()
                await self._claimer()
        finally:
            self.running.clear()
            self._transport = None
            self.store.set_outbox_listener(None)
            await self._give_back()

    async def _give_back(self) -> None:
        """On the way out: record what was done, and hand back what was not, so a
        restart delivers it at once rather than after the lease."""
        results, self._results = self._results, []
        done = {o.row.id for o in results}
        unsent = [row_id for row_id in self._outstanding if row_id not in done]
        while not self._queue.empty():
            self._queue.get_nowait()
        if not results and not unsent:
            return
        try:
            await asyncio.shield(self._settle(results, extra_release=unsent))
        except Exception:
            log.warning("could not record the last webhook outcomes; they will be sent again", exc_info=True)
        self._outstanding.clear()

    async def _claimer(self) -> None:
        cfg = self.config.webhooks
        # Claim ahead in big batches: a store round trip per few hundred events,
        # not per event, so that deliveries keep flowing when the store is busy.
        capacity = max(cfg.concurrency * 8, 64)
        while True:
            self._wake.clear()
            now = time.time()
            accounts = self._open_accounts(now)
            free = capacity - len(self._outstanding)
            rows: list[OutboxRow] = []
            busy = self._queue.qsize() > cfg.concurrency  # settles will wake us
            if free > 0 and accounts and not busy:
                rows = await self.store.claim_outbox(accounts, free, lease_s=cfg.lease, now=now)
                for row in rows:
                    if row.id in self._outstanding:
                        continue  # its lease ran out while we still hold it
                    self._outstanding[row.id] = row
                    self.stats.claimed += 1
                    self._queue.put_nowait(row)
            if rows and len(rows) == free:
                continue  # more may be due: claim again once the queue has room
            # Retries (ours, or an earlier run's) are in the store: sleep until the
            # first is due, a paused account may be tried again, or something wakes us.
            deadline = now + cfg.poll_interval
            if accounts and not busy and not self._wake.is_set():
                due = await self.store.next_outbox_due(accounts, now=now)
                if due is not None:
                    deadline = min(deadline, due)
            for health in self._health.values():
                if health.paused_until > now:
                    deadline = min(deadline, health.paused_until)
            await self._sleep(deadline - time.time())

    async def _sleep(self, delay: float) -> None:
        if delay <= 0:
            return
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _worker(self) -> None:
        while True:
            row = await self._queue.get()
            try:
                outcome = await self._attempt(row)
            except Exception as exc:  # a fault of ours: that event is retried, the worker goes on
                log.error("webhook event %d of account %s: unexpected %s; retrying", row.id, row.account,
                          type(exc).__name__, exc_info=True)
                outcome = _Outcome(row, "retry", _short(f"internal error: {type(exc).__name__}"), at=time.time())
            self._results.append(outcome)
            self._results_ready.set()

    async def _attempt(self, row: OutboxRow) -> _Outcome:
        now = time.time()
        account = self._accounts().get(row.account)
        if account is None:
            # Its webhook was removed from the config: keep the event for when it comes back.
            return _Outcome(row, "release")
        if self._paused(row.account, now):
            return _Outcome(row, "release")
        try:
            request = build_request(row, account, self._zone, now=now)
        except Unrenderable as exc:
            return _Outcome(row, "dead", _short(str(exc)))
        except Exception as exc:  # a payload the formatter chokes on: this event only, retried
            first = row.attempts == 0  # logged once (with the traceback), then quietly
            log.log(logging.WARNING if first else logging.DEBUG,
                    "webhook event %d (%s) of account %s could not be formatted (%s); retrying",
                    row.id, row.kind, row.account, type(exc).__name__, exc_info=first)
            return _Outcome(row, "retry", f"formatting failed: {type(exc).__name__}", at=time.time())
        transport = self._transport
        if transport is None:
            return _Outcome(row, "release")
        started = time.monotonic()
        self.stats.requests += 1
        error = ""
        account_failure = False
        try:
            status = await transport.send(request)
            if 200 <= status < 300:
                self.stats.request_seconds += time.monotonic() - started
                return _Outcome(row, "delivered", at=time.time())
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += (" (a POST is not redirected: set webhook_url to the final URL)" if request.method != "GET"
                          else " (redirect without a usable Location)")
            account_failure = status >= 500 or status == 429
        except TimeoutError:
            error = f"no answer within {transport.timeout:g} s"
            account_failure = True
        except SendError as exc:
            error = str(exc)
            account_failure = exc.receiver_down
        except Exception as exc:  # anything else from the transport: this event only, retried
            first = row.attempts == 0
            log.log(logging.WARNING if first else logging.DEBUG,
                    "webhook event %d (%s) of account %s: sending failed (%s); retrying", row.id, row.kind,
                    row.account, type(exc).__name__, exc_info=first)
            error = f"sending failed: {type(exc).__name__}"
        self.stats.request_seconds += time.monotonic() - started
        return _Outcome(row, "retry", _short(error), account_failure=account_failure, at=time.time())

    async def _settler(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            results, self._results = self._results, []
            if results:
                await self._settle(results)
                self.wake()

    async def _settle(self, results: list[_Outcome], *, extra_release: Sequence[int] = ()) -> None:
        cfg = self.config.webhooks
        now = time.time()
        delivered: list[tuple[int, float]] = []
        retry: list[tuple[int, float, str]] = []
        dead: list[tuple[int, str]] = []
        release: list[int] = list(extra_release)
        recovered: list[str] = []
        for o in results:
            row = o.row
            health = self._health.get(row.account)
            if o.status == "delivered":
                delivered.append((row.id, o.at))
                latency = o.at - row.created
                self.stats.delivered += 1
                self.stats.latency_seconds += latency
                self.stats.latency_max = max(self.stats.latency_max, latency)
                if health is not None and (health.failures or health.paused_until):
                    log.info("webhook of account %s answers again; sending what waited", row.account)
                    health.failures, health.paused_until = 0, 0.0
                    if row.account not in recovered:
                        recovered.append(row.account)
            elif o.status == "release":
                release.append(row.id)
            elif o.status == "dead":
                dead.append((row.id, o.error))
                self.stats.dead += 1
                log.warning("webhook event %d (%s) of account %s dropped: %s", row.id, row.kind, row.account,
                            o.error)
            else:
                self.stats.failed_attempts += 1
                attempts = row.attempts + 1
                if now - row.created >= cfg.max_age:
                    dead.append((row.id, o.error))
                    self.stats.dead += 1
                    log.warning("webhook event %d (%s) of account %s dead after %d attempts over %.0f s: %s",
                                row.id, row.kind, row.account, attempts, now - row.created, o.error)
                    continue
                at = min(now + backoff(attempts, initial=cfg.backoff_initial, cap=cfg.backoff_max, rng=self.rng),
                         row.created + cfg.max_age)
                retry.append((row.id, at, o.error))
                if o.account_failure:
                    health = self._health.setdefault(row.account, _AccountHealth())
                    if health.paused_until > now:
                        continue  # the same outage, seen by another request of the same round
                    health.failures += 1
                    if health.failures == 1:
                        log.warning("webhook of account %s failed (%s); retrying with backoff",
                                    row.account, o.error)
                    else:
                        log.debug("webhook of account %s failed again (%s)", row.account, o.error)
                    pause = backoff(health.failures, initial=cfg.backoff_initial,
                                    cap=min(cfg.backoff_max, ACCOUNT_PAUSE_MAX), rng=self.rng)
                    health.paused_until = max(health.paused_until, now + pause)
                else:
                    log.info("webhook event %d of account %s refused (%s); retrying", row.id, row.account, o.error)
        await self.store.settle_outbox(delivered=delivered, retry=retry, dead=dead, release=release,
                                       recovered=recovered, now=now)
        for o in results:
            self._outstanding.pop(o.row.id, None)
        for row_id in release:
            self._outstanding.pop(row_id, None)
