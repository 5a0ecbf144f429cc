"""Managing an account from outside a CRM: conversations per contact number,
the queue (search, cancel, a job's history), devices with their sends of the
day, the webhook outbox (replay a dead event, send a test event) and a live
stream of changes. :class:`Manage` does the work for a given account and is
shared by two doors: the API's Bearer routes here (:class:`ManageRoutes`)
and the web console (``bridge/console``), which the app factory hands the
same :class:`Manage`, so that the console can do nothing the API cannot.

An operator (``[console] operators``) may name any account (``account``
parameter) and sees every device; anyone else only their own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from bridge.api import bodies
from bridge.api._store import Job, JobQueue, Outbox, OutboxEvent, RecordStore
from bridge.api.auth import Auth
from bridge.api.envelope import iso, success
from bridge.api.errors import E_OPTED_OUT, ERROR_TEXT, ApiError
from bridge.api.judging import judge_message, normalise_batch
from bridge.api.settings import Settings
from bridge.api.views import DaemonView
from bridge.config import AccountConfig
from bridge.core import jobstates as js
from bridge.core import numbers

MAX_JOBS = 500
THREAD_SCAN = 2000  # messages read to build the thread list
MAX_TEXT = 1600
KEEPALIVE_S = 15.0
TEST_EVENT_KIND = "sms_received"



def job_view(job: Job, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One outgoing job (SMS or call) as the management routes show it: our
    own state names (``status`` is the job's state), with its history when given."""
    sent_at = next((h["at"] for h in history or () if h["state"] == js.SENT), None)
    view: dict[str, Any] = {
        "id": job.id_sms_api, "id_sms_api": job.id_sms_api, "direction": "outbound", "type": job.kind,
        "phone_number": job.phone_number, "message": job.message, "status": job.state, "state": job.state,
        "reason": job.reason, "priority": job.priority, "created_at": iso(job.created),
        "date_to_send": iso(job.due), "sent_at": iso(sent_at), "updated_at": iso(job.updated),
        "sms_per_message": job.parts, "encoding": job.encoding, "device_id": job.device_id,
        "attempts": job.attempts, "url": job.url}
    if history is not None:
        view["history"] = [{"status": h["state"], "at": iso(h["at"]), "device_id": h["device_id"],
                            "reason": h["reason"]} for h in history]
    return view


class Manage:
    def __init__(self, *, settings: Settings, jobs: JobQueue, records: RecordStore, outbox: Outbox | None,
                 daemon: DaemonView | None, on_enqueued: Callable[[], None]) -> None:
        self.settings = settings
        self.jobs = jobs
        self.records = records
        self.outbox = outbox
        self.daemon = daemon
        self.on_enqueued = on_enqueued

    # -- who may see what -----------------------------------------------------------

    def is_operator(self, viewer: AccountConfig) -> bool:
        return viewer.login in self.settings.config.console.operators

    def scope(self, viewer: AccountConfig, requested: str | None) -> AccountConfig:
        """The account a request is about: the viewer's own, or (operators
        only) the one it names."""
        if not requested or requested == viewer.login:
            return viewer
        if not self.is_operator(viewer):
            raise ApiError(403, "only an operator may read another account")
        account = self.settings.config.account(requested)
        if account is None:
            raise ApiError(404, f"no account {requested!r}"[:200])
        return account

    def accounts(self, viewer: AccountConfig) -> list[str]:
        if self.is_operator(viewer):
            return [a.login for a in self.settings.config.accounts]
        return [viewer.login]

    # -- conversations ----------------------------------------------------------------

    def _key(self, number: str) -> str:
        return numbers.normalise_or_keep(number, self.settings.region)

    async def _names(self, account: str) -> dict[str, str]:
        out = {}
        for c in await self.records.contacts(account, limit=10_000):
            name = f"{c.firstname} {c.lastname}".strip()
            if name:
                out[self._key(c.phone_number)] = name
        return out

    async def threads(self, account: AccountConfig) -> list[dict[str, Any]]:
        """One thread per contact number, the most recent first."""
        rows = await self.records.messages(account.login, take=THREAD_SCAN)
        names = await self._names(account.login)
        threads: dict[str, dict[str, Any]] = {}
        for row in rows:  # newest first
            key = self._key(row["phone_number"])
            thread = threads.get(key)
            if thread is None:
                threads[key] = thread = {"number": key, "name": names.get(key), "last_text": row["text"],
                                         "last_at": iso(row["created"]), "last_direction": row["direction"],
                                         "last_status": row["status"], "messages": 0}
            thread["messages"] += 1
        stopped = await self.records.opted_out(account.login, list(threads))
        for key, thread in threads.items():
            thread["opted_out"] = key in stopped
        return list(threads.values())

    async def thread(self, account: AccountConfig, number: str) -> dict[str, Any]:
        """The messages with one number, oldest first, each outgoing one with
        its state and device."""
        key = self._key(number)
        rows = [r for r in await self.records.messages(account.login, take=THREAD_SCAN)
                if self._key(r["phone_number"]) == key]
        rows.sort(key=lambda r: (r["created"], r["id"]))
        names = await self._names(account.login)
        stopped = await self.records.opted_out(account.login, [key])
        return {"number": key, "name": names.get(key), "opted_out": key in stopped,
                "messages": [{"id": r["id"], "direction": r["direction"], "text": r["text"], "status": r["status"],
                              "reason": r["reason"], "device_id": r["device_id"], "at": iso(r["created"]),
                              "sent_at": iso(r["sent_at"])} for r in rows]}

    async def send(self, account: AccountConfig, number: Any, text: Any) -> dict[str, Any]:
        """One SMS, judged as sendsms judges each message (number, text,
        forbidden words, opt-out); a 400 saying why when refused."""
        if not account.enabled:
            raise ApiError(403, ERROR_TEXT["#002"], "#002")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            raise ApiError(400, f"'message' is longer than {MAX_TEXT} characters")
        rules = self.settings.rules
        checked = normalise_batch([number], 0, rules.region)[0]
        judged = judge_message(0, {"phone_number": number, "message": text}, {}, 1, rules, checked)
        if judged.new is None:
            raise ApiError(400, judged.detail or "refused", judged.errors[0] if judged.errors else None)
        if await self.records.opted_out(account.login, [judged.new.phone_number]):
            raise ApiError(400, ERROR_TEXT[E_OPTED_OUT], E_OPTED_OUT)
        enqueued = (await self.jobs.enqueue(account.login, [judged.new]))[0]
        self.on_enqueued()
        return job_view(enqueued.job)

    # -- the queue --------------------------------------------------------------------

    async def find(self, account: AccountConfig, *, state: str | None, search: str,
                   limit: int) -> list[dict[str, Any]]:
        if state and state not in js.STATES:
            raise ApiError(400, f"'state' must be one of {', '.join(js.STATES)}")
        jobs = await self.jobs.find_jobs(account.login, states=(state,) if state else (), search=search[:64],
                                         limit=limit)
        return [job_view(j) for j in jobs]

    async def job(self, account: AccountConfig, id_sms_api: str) -> dict[str, Any]:
        job = await self.jobs.get_job(account.login, id_sms_api)
        if job is None:
            raise ApiError(404, "no such message")
        return job_view(job, await self.jobs.history(job.id))

    async def cancel(self, account: AccountConfig, id_sms_api: str) -> dict[str, Any]:
        """Cancel a queued job; a 409 naming its state when it is past that."""
        job = await self.jobs.cancel(account.login, id_sms_api, reason="cancelled by its account")
        if job is None:
            raise ApiError(404, "no such message")
        if job.state != js.CANCELLED:
            raise ApiError(409, f"the message is {job.state}: only a queued message can be cancelled",
                           state=job.state)
        return job_view(job, await self.jobs.history(job.id))

    async def counts(self, account: AccountConfig) -> list[dict[str, Any]]:
        """Jobs of the account by state and priority."""
        counts = await self.jobs.counts(account.login)
        return [{"state": s, "priority": p, "count": n} for (s, p), n in sorted(counts.items())]

    # -- devices ----------------------------------------------------------------------

    async def devices(self, viewer: AccountConfig) -> list[dict[str, Any]]:
        """The daemon's devices view (every device for an operator), with each
        device's sends since local midnight and its limits."""
        if self.daemon is None:
            return []
        rows = self.daemon.devices_view(None if self.is_operator(viewer) else viewer)
        config = self.settings.config
        midnight = datetime.now(ZoneInfo(config.api.timezone)).replace(hour=0, minute=0, second=0,
                                                                       microsecond=0).timestamp()
        sent = await self.jobs.sent_counts(midnight)
        for row in rows:
            device = config.device(str(row.get("id")))
            row["sent_today"] = sent.get(str(row.get("id")), 0)
            row["max_per_minute"] = device.max_per_minute if device else None
            row["max_per_hour"] = device.max_per_hour if device else None  # 0: no cap (parts)
            row["max_per_day"] = device.max_per_day if device else None
            row["window"] = config.agents.window
            row["last_seen_at"] = iso(row["last_seen"]) if isinstance(row.get("last_seen"), float) else None
        return rows

    async def store_fault(self) -> str | None:
        """Why the store takes no writes now, or None (shown beside the devices)."""
        return await self.daemon.store_fault() if self.daemon is not None else None

    async def recheck(self, viewer: AccountConfig, device_id: str) -> dict[str, Any]:
        device = self.settings.config.device(device_id)
        if device is None or self.daemon is None or (device.account != viewer.login
                                                     and not self.is_operator(viewer)):
            raise ApiError(404, "no such device")
        return {"device": device.id, "closed": await self.daemon.recheck(device.id)}

    # -- webhooks ---------------------------------------------------------------------

    def _outbox(self) -> Outbox:
        if self.outbox is None:
            raise ApiError(404, "no webhook outbox in this daemon")
        return self.outbox

    async def webhook_events(self, account: AccountConfig, *, delivered: bool) -> list[dict[str, Any]]:
        entries = await self._outbox().outbox_entries(account.login, undelivered=not delivered)
        return [{"id": e.id, "kind": e.kind, "status": e.status, "attempts": e.attempts,
                 "created_at": iso(e.created), "next_attempt_at": iso(e.next_attempt)
                 if e.status in ("pending", "retrying") else None,
                 "delivered_at": iso(e.delivered_at), "last_error": e.last_error, "payload": json.loads(e.payload)}
                for e in entries]

    async def replay(self, account: AccountConfig, event_id: int) -> dict[str, Any]:
        if not await self._outbox().replay_dead(account.login, [event_id]):
            raise ApiError(409, "not a dead event of this account")
        return {"id": event_id, "status": "pending"}

    async def test_event(self, account: AccountConfig) -> dict[str, Any]:
        """Record an ``sms_received`` event marked as a test, for the account's
        webhook receiver; a 409 when the account has no webhook."""
        if not account.webhook_url:
            raise ApiError(409, "the account has no webhook_url")
        now = time.time()
        event = OutboxEvent(account.login, TEST_EVENT_KIND, "test",
                            {"from": "+10000000000", "message": "simbridge test event", "date": now,
                             "device_id": None, "incomplete": False, "test": True})
        recorded = await self._outbox().record_events([event], at=now)
        if not recorded:
            raise ApiError(409, f"the account's webhook form is not sent {TEST_EVENT_KIND}")
        return {"recorded": recorded}

    # -- changes ----------------------------------------------------------------------

    async def activity(self, account: AccountConfig) -> float:
        """The account's activity stamp: it moves whenever a message changes."""
        return await self.records.last_activity(account.login)

    def stream(self, request: web.Request, account: AccountConfig) -> Awaitable[web.StreamResponse]:
        return event_stream(request, lambda: self.activity(account),
                            lambda: self.settings.config.console.poll_interval)


async def event_stream(request: web.Request, stamp: Callable[[], Awaitable[float]],
                       interval: Callable[[], float]) -> web.StreamResponse:
    """Server-sent events: a ``change`` event at once and whenever ``stamp()``
    moves (looked at every ``interval()`` seconds), a comment every 15 s so
    that proxies keep the stream open. A request that does not accept
    ``text/event-stream`` (EventSource always does) gets the stamp of the
    moment as JSON instead, for clients that poll."""
    if "text/event-stream" not in request.headers.get("Accept", ""):
        return success({"changed": await stamp()})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    last: float | None = None
    quiet_since = time.monotonic()
    try:
        while True:
            now = await stamp()
            if now != last:
                last = now
                await response.write(f"event: change\ndata: {now}\n\n".encode())
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                await response.write(b": keep-alive\n\n")
                quiet_since = time.monotonic()
            await asyncio.sleep(interval())
    except ConnectionResetError:
        pass  # the reader went away
    return response


class ManageRoutes:
    """The Bearer doors of :class:`Manage` (docs/api.md, "Managing")."""

    def __init__(self, *, auth: Auth, manage: Manage) -> None:
        self.auth = auth
        self.manage = manage

    def _account(self, request: web.Request) -> AccountConfig:
        return self.manage.scope(self.auth.bearer(request), request.query.get("account"))

    def add_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_get("/api/v1/threads", self.threads)
        r.add_get("/api/v1/threads/{number}", self.thread)
        r.add_post("/api/v1/threads/{number}", self.reply)
        r.add_get("/api/v1/jobs", self.find)
        r.add_get("/api/v1/jobs/counts", self.counts)
        r.add_post("/api/v1/sms/{id}/cancel", self.cancel)
        r.add_get("/api/v1/webhooks/events", self.webhook_events)
        r.add_post("/api/v1/webhooks/events/{id}/replay", self.replay)
        r.add_post("/api/v1/webhooks/test", self.test_event)
        r.add_get("/api/v1/events", self.events)
        r.add_get("/api/v1/devices", self.devices)

    async def threads(self, request: web.Request) -> web.Response:
        return success(await self.manage.threads(self._account(request)))

    async def thread(self, request: web.Request) -> web.Response:
        return success(await self.manage.thread(self._account(request), request.match_info["number"]))

    async def reply(self, request: web.Request) -> web.Response:
        account = self._account(request)
        body = await bodies.object_body(request)
        return success(await self.manage.send(account, request.match_info["number"], body.get("message")))

    async def find(self, request: web.Request) -> web.Response:
        limit = bodies.int_param(request.query, "take", 100, 1, MAX_JOBS)
        return success(await self.manage.find(self._account(request), state=request.query.get("state") or None,
                                              search=request.query.get("search", ""), limit=limit))

    async def counts(self, request: web.Request) -> web.Response:
        return success(await self.manage.counts(self._account(request)))

    async def cancel(self, request: web.Request) -> web.Response:
        return success(await self.manage.cancel(self._account(request), request.match_info["id"]))

    async def webhook_events(self, request: web.Request) -> web.Response:
        delivered = request.query.get("delivered", "false").lower() in ("1", "true", "yes")
        return success(await self.manage.webhook_events(self._account(request), delivered=delivered))

    async def replay(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise ApiError(400, "the event id is a number")
        return success(await self.manage.replay(self._account(request), int(raw)))

    async def test_event(self, request: web.Request) -> web.Response:
        return success(await self.manage.test_event(self._account(request)))

    async def devices(self, request: web.Request) -> web.Response:
        rows = await self.manage.devices(self.auth.bearer(request))
        fault = await self.manage.store_fault()
        return success(rows, store={"writable": fault is None, "fault": fault})

    async def events(self, request: web.Request) -> web.StreamResponse:
        return await self.manage.stream(request, self._account(request))
