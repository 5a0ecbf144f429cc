"""Notimation's API (seed 004), in its shapes and envelope: ``POST
/api/v1/sms`` (``{recipient, message}``), the message list (``GET
/api/v1/sms``, outgoing and inbound, its ``direction`` / ``status`` / ``take``
/ ``skip`` filters), one message (``GET /api/v1/sms/{id}``), and the
phone-number lookup (``GET /api/v1/phone_number/{country}/{number}``).
Messages have Notimation's numeric ids and status names
(:mod:`bridge.core.notimation`) and ``phone_number`` as its object. Bearer
authentication (or ``api_key``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import phonenumbers
from aiohttp import web

from bridge.api import bodies
from bridge.api._store import Job, JobQueue, RecordStore
from bridge.api.auth import Auth
from bridge.api.bodies import int_param
from bridge.api.envelope import iso, success
from bridge.api.errors import E_OPTED_OUT, ERROR_TEXT, ApiError
from bridge.api.judging import judge_message
from bridge.api.links import link_view
from bridge.api.settings import Settings
from bridge.core import jobstates as js
from bridge.core import notimation as nm
from bridge.core import numbers

MAX_TAKE = 1000
DEFAULT_TAKE = 50
MAX_SKIP = 10_000_000
MAX_ID = 2**62
DIRECTIONS = {"in": "in", "inbound": "in", "incoming": "in", "out": "out", "outbound": "out", "outgoing": "out"}
# Notimation's status filters, then our own state names (an extension).
STATUS_FILTERS: dict[str, tuple[str, ...]] = {**{s: (s,) for s in js.STATES}, **nm.STATUS_FILTER}
INBOUND_ID_RE = re.compile(r"in_(\d{1,18})")


@functools.lru_cache(maxsize=4096)
def _describe(number: str, region: str | None) -> dict[str, Any] | None:
    try:
        return numbers.describe(number, region)
    except ValueError:
        return None


def phone_object(number: str, region: str | None) -> dict[str, Any]:
    """Notimation's ``phone_number`` object; a sender that is no number (a
    short code, a name) is kept as it is, marked invalid."""
    described = _describe(number, region)
    if described is not None:
        return dict(described)
    return {"number": number, "formatted_number": number, "international_number": None, "is_mobile": False,
            "is_invalid": True, "invalid_reason": "not a phone number", "operator": None, "city": None}


def message_view(row: dict[str, Any], region: str | None) -> dict[str, Any]:
    """A row of the message list (an outgoing job or an inbound SMS)."""
    outbound = row["direction"] == "out"
    view: dict[str, Any] = {
        "id": nm.outbound_id(row["job_id"]) if outbound else nm.inbound_id(row["inbound_id"]),
        "phone_number": phone_object(row["phone_number"], region),
        "direction": "outbound" if outbound else "inbound",
        "content": row["text"],
        "status": nm.STATUS.get(row["status"], row["status"]) if outbound else nm.INBOUND_STATUS,
        "status_message": row["reason"],
        "created_at": iso(row["created"]), "programmed_at": iso(row["due"]), "sent_at": iso(row["sent_at"]),
        # extensions
        "id_sms_api": row["id_sms_api"], "state": row["status"], "type": "sms", "updated_at": iso(row["updated"]),
        "device_id": row["device_id"],
    }
    if outbound:
        view.update({"priority": row["priority"], "sms_per_message": row["parts"], "encoding": row["encoding"],
                     "attempts": row["attempts"]})
    else:
        view.update({"received_at": iso(row.get("received_at")), "incomplete": bool(row.get("incomplete"))})
    return view


def job_view(job: Job, region: str | None, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One outgoing job (SMS or call), with its state history when given."""
    sent_at = next((h["at"] for h in history or () if h["state"] == js.SENT), None)
    view: dict[str, Any] = {
        "id": nm.outbound_id(job.id), "phone_number": phone_object(job.phone_number, region),
        "direction": "outbound", "content": job.message, "status": nm.STATUS.get(job.state, job.state),
        "status_message": job.reason, "created_at": iso(job.created), "programmed_at": iso(job.due),
        "sent_at": iso(sent_at),
        # extensions
        "id_sms_api": job.id_sms_api, "state": job.state, "type": job.kind, "updated_at": iso(job.updated),
        "priority": job.priority, "sms_per_message": job.parts, "encoding": job.encoding,
        "device_id": job.device_id, "attempts": job.attempts, "url": job.url}
    if history is not None:
        view["history"] = [{"status": h["state"], "at": iso(h["at"]), "device_id": h["device_id"],
                            "reason": h["reason"]} for h in history]
    return view


def _choice(value: str | None, table: dict[str, Any], what: str) -> Any:
    if value is None:
        return None
    if value.lower() not in table:
        raise ApiError(400, what)
    return table[value.lower()]


class Notimation:
    def __init__(self, *, settings: Settings, auth: Auth, jobs: JobQueue, records: RecordStore,
                 on_enqueued: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.auth = auth
        self.jobs = jobs
        self.records = records
        self.on_enqueued = on_enqueued

    async def create_sms(self, request: web.Request) -> web.Response:
        """``POST /api/v1/sms {recipient, message}``: one SMS, queued; Notimation's answer."""
        params = await bodies.params(request)
        account = self.auth.bearer_enabled(request, params)
        recipient = params.get("recipient")
        if recipient is None or recipient == "":
            raise ApiError(400, "'recipient' is required: the number to send to")
        rules = self.settings.rules
        judged = judge_message(0, {"phone_number": recipient, "message": params.get("message")}, {}, 1, rules)
        if judged.new is None:
            raise ApiError(422, judged.detail or ERROR_TEXT[judged.errors[0]], judged.errors[0])
        if await self.records.opted_out(account.login, [judged.new.phone_number]):
            raise ApiError(422, ERROR_TEXT[E_OPTED_OUT], E_OPTED_OUT)
        [enqueued] = await self.jobs.enqueue(account.login, [judged.new])
        self.on_enqueued()
        job = enqueued.job
        return success([{"sms_id": nm.outbound_id(job.id), "sms_status": nm.STATUS.get(job.state, job.state)}])

    async def list_sms(self, request: web.Request) -> web.Response:
        account = self.auth.bearer(request)
        q = request.query
        direction = _choice(q.get("direction") or None, DIRECTIONS,
                            "'direction' must be \"inbound\" or \"outbound\"")
        status = _choice(q.get("status") or None, STATUS_FILTERS,
                         "'status' must be one of " + ", ".join(sorted(STATUS_FILTERS)))
        take = int_param(q, "take", DEFAULT_TAKE, 1, MAX_TAKE)
        skip = int_param(q, "skip", 0, 0, MAX_SKIP)
        cursor = q.get("cursor") or None  # the next_cursor of the page before: keyset paging
        try:
            rows = await self.records.messages(account.login, direction=direction, status=status, take=take,
                                               skip=skip, cursor=cursor)
        except ValueError as exc:
            raise ApiError(400, f"'cursor': {exc}") from None
        region = self.settings.region
        return success([message_view(r, region) for r in rows],
                       next_cursor=rows[-1]["cursor"] if len(rows) == take else None)

    async def get_sms(self, request: web.Request) -> web.Response:
        """One message by Notimation's numeric id (or, as extensions, its
        ``id_sms_api`` or ``in_<n>``)."""
        account = self.auth.bearer(request)
        wanted = request.match_info["id"]
        region = self.settings.region
        job: Job | None = None
        row: dict[str, Any] | None = None
        if wanted.isdigit() and len(wanted) <= 18 and int(wanted) < MAX_ID:
            direction, number = nm.split_id(int(wanted))
            if direction == "out":
                job = await self.jobs.get_job_by_id(account.login, number)
            else:
                row = await self.records.get_inbound(account.login, number)
        if job is None and row is None:
            job = await self.jobs.get_job(account.login, wanted)
        if job is None and row is None:
            found = INBOUND_ID_RE.fullmatch(wanted)
            row = await self.records.get_inbound(account.login, int(found.group(1))) if found else None
        if row is not None:
            return success(message_view(row, region))
        if job is None:
            raise ApiError(404, f"no SMS with id {wanted[:80]!r} for this account")
        view = job_view(job, region, await self.jobs.history(job.id))
        if job.kind == "sms":
            links = await self.records.links(account.login, job.id_sms_api)
            if links:
                public_url = self.settings.config.api.public_url
                view["links"] = [link_view(link, public_url) for link in links]
        return success(view)

    async def phone_number(self, request: web.Request) -> web.Response:
        self.auth.bearer(request)
        country = request.match_info["country"].upper()
        if country not in phonenumbers.SUPPORTED_REGIONS:
            raise ApiError(400, f"unknown country code {request.match_info['country'][:8]!r} "
                                "(use a two-letter code such as \"fr\" or \"ar\")")
        lang = request.query.get("lang", "en")
        if not re.fullmatch(r"[a-zA-Z]{2}", lang):
            raise ApiError(400, "'lang' must be a two-letter language code")
        raw = request.match_info["number"]
        try:
            data = numbers.describe(raw, country, lang=lang.lower())
        except ValueError as exc:
            data = {"number": raw[:64], "formatted_number": None, "international_number": None,
                    "is_mobile": False, "is_invalid": True, "invalid_reason": str(exc)[:200],
                    "operator": None, "city": None, "country": country, "type": "unknown"}
        return success(data)
