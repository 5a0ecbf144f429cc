"""The read side, in Notimation's shapes and envelope: the message list
(``GET /api/v1/sms``, outgoing and inbound), one message with its history
and tracked links (``GET /api/v1/sms/{id}``), and the phone-number lookup
(``GET /api/v1/phone_number/{country}/{number}``). Bearer authentication."""

from __future__ import annotations

import functools
import re
from typing import Any

import phonenumbers
from aiohttp import web

from bridge.api._store import Job, JobQueue, RecordStore
from bridge.api.auth import Auth
from bridge.api.bodies import int_param
from bridge.api.envelope import iso, success
from bridge.api.errors import ApiError
from bridge.api.links import link_view
from bridge.api.settings import Settings
from bridge.core import jobstates as js
from bridge.core import numbers

MAX_TAKE = 1000
DEFAULT_TAKE = 50
MAX_SKIP = 10_000_000
DIRECTIONS = {"in": "in", "inbound": "in", "incoming": "in", "out": "out", "outbound": "out", "outgoing": "out"}
STATUS_FILTERS = {**{s: s for s in js.STATES}, "received": "received", "error": js.FAILED}
INBOUND_ID_RE = re.compile(r"in_(\d{1,18})")


@functools.lru_cache(maxsize=4096)
def describe_number(number: str, region: str | None) -> dict[str, Any] | None:
    try:
        return numbers.describe(number, region)
    except ValueError:
        return None


def message_view(row: dict[str, Any], region: str | None) -> dict[str, Any]:
    """A row of the message list (an outgoing job or an inbound SMS)."""
    outbound = row["direction"] == "out"
    view: dict[str, Any] = {
        "id": row["id"], "id_sms_api": row["id_sms_api"],
        "direction": "outbound" if outbound else "inbound",
        "type": "sms", "phone_number": row["phone_number"],
        "phone_number_info": describe_number(row["phone_number"], region),
        "content": row["text"], "message": row["text"],
        "status": row["status"], "status_message": row["reason"],
        "created_at": iso(row["created"]), "programmed_at": iso(row["due"]),
        "sent_at": iso(row["sent_at"]), "updated_at": iso(row["updated"]),
        "device_id": row["device_id"],
    }
    if outbound:
        view.update({"reason": row["reason"], "priority": row["priority"],
                     "date_to_send": iso(row["due"]), "sms_per_message": row["parts"],
                     "encoding": row["encoding"], "attempts": row["attempts"]})
    else:
        view.update({"received_at": iso(row.get("received_at")),
                     "incomplete": bool(row.get("incomplete"))})
    return view


def job_view(job: Job, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One outgoing job (SMS or call), with its state history when given."""
    sent_at = next((h["at"] for h in history or () if h["state"] == js.SENT), None)
    view: dict[str, Any] = {
        "id": job.id_sms_api, "id_sms_api": job.id_sms_api, "direction": "outbound", "type": job.kind,
        "phone_number": job.phone_number, "content": job.message, "message": job.message,
        "status": job.state, "status_message": job.reason, "reason": job.reason, "priority": job.priority,
        "created_at": iso(job.created), "programmed_at": iso(job.due), "sent_at": iso(sent_at),
        "date_to_send": iso(job.due), "updated_at": iso(job.updated),
        "sms_per_message": job.parts, "encoding": job.encoding, "device_id": job.device_id,
        "attempts": job.attempts, "url": job.url}
    if history is not None:
        view["history"] = [{"status": h["state"], "at": iso(h["at"]), "device_id": h["device_id"],
                            "reason": h["reason"]} for h in history]
    return view


def _choice(value: str | None, table: dict[str, str], what: str) -> str | None:
    if value is None:
        return None
    if value.lower() not in table:
        raise ApiError(400, what)
    return table[value.lower()]


class Notimation:
    def __init__(self, *, settings: Settings, auth: Auth, jobs: JobQueue, records: RecordStore) -> None:
        self.settings = settings
        self.auth = auth
        self.jobs = jobs
        self.records = records

    async def list_sms(self, request: web.Request) -> web.Response:
        account = self.auth.bearer(request)
        q = request.query
        direction = _choice(q.get("direction") or None, DIRECTIONS,
                            "'direction' must be \"in\" (inbound) or \"out\" (outbound)")
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
        account = self.auth.bearer(request)
        wanted = request.match_info["id"]
        region = self.settings.region
        job = await self.jobs.get_job(account.login, wanted)
        if job is None:
            found = INBOUND_ID_RE.fullmatch(wanted)
            row = await self.records.get_inbound(account.login, int(found.group(1))) if found else None
            if row is None:
                raise ApiError(404, f"no SMS with id {wanted[:80]!r} for this account")
            return success(message_view(row, region))
        view = job_view(job, await self.jobs.history(job.id))
        if job.kind == "sms":
            view["phone_number_info"] = describe_number(job.phone_number, region)
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
