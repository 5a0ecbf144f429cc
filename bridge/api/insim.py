"""inSIM's endpoints (seed 000), answered in inSIM's shapes: ``sendsms``
(a batch, each message judged on its own by :mod:`bridge.api.judging`),
``contact``, ``clicTocall`` and ``qualification`` (call notes). They
authenticate with the body's ``header``; the older Ardary form of sendsms is
answered through :mod:`bridge.api.ardary`."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from bridge.api import ardary, bodies
from bridge.api._store import Contact, Enqueued, Job, JobQueue, NewJob, RecordStore, new_id_sms_api
from bridge.api.auth import Auth
from bridge.api.envelope import iso, json_response, success
from bridge.api.errors import (
    CALL_NOT_CONNECTED,
    CONTACT_ERROR_TEXT,
    E_AUTH,
    E_DISABLED,
    E_NUMBER,
    E_OPTED_OUT,
    E_REUSED,
    ERROR_TEXT,
    ApiError,
)
from bridge.api.judging import (
    Judged,
    JudgedContact,
    judge_contact,
    judge_message,
    normalise_batch,
    raw_number,
    require_number,
)
from bridge.api.settings import Settings
from bridge.api.workers import SplitPool
from bridge.core import numbers
from device_agents.common import mask_number

log = logging.getLogger(__name__)

CALL_INFO = "please make sure the phone is connected and inSIM is running"
CALL_TTL_S = 120.0  # a call not placed within two minutes is no longer wanted
MAX_NOTE_CHARS = 10_000


class Insim:
    def __init__(self, *, settings: Settings, auth: Auth, jobs: JobQueue, records: RecordStore,
                 workers: SplitPool, on_enqueued: Callable[[], None],
                 phones_online: Callable[[str], bool]) -> None:
        self.settings = settings
        self.auth = auth
        self.jobs = jobs
        self.records = records
        self.workers = workers
        self.on_enqueued = on_enqueued
        # Whether a device of the account that can place calls is connected.
        self.phones_online = phones_online

    # -- sendsms ------------------------------------------------------------------

    async def sendsms(self, request: web.Request) -> web.Response:
        body = await bodies.object_body(request, "body must be a JSON object with 'header' and 'messages'")
        header, old_form = bodies.insim_header(body)
        old_form = old_form or request.path in ardary.SEND_PATHS
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise ApiError(400, "'messages' must be a list of messages")
        limit = self.settings.config.api.max_messages
        if len(messages) > limit:
            raise ApiError(413, f"{len(messages)} messages in one request; at most {limit}")
        mode = header.get("mode", "prod")
        if mode not in ("prod", "test"):
            raise ApiError(400, f"header.mode must be \"prod\" or \"test\", not {mode!r}"[:200])
        rules = self.settings.rules
        priority = header.get("priority", 1)
        account = self.auth.header_account(header)
        if account is None or not account.enabled:
            # Refused before any real work: a stranger's batch costs us no number checks.
            code = E_AUTH if account is None else E_DISABLED
            failed = (None, ERROR_TEXT[code])
            results = [_answer(None, judge_message(i, m, header, priority, rules, failed), errors=(code,),
                               detail=ERROR_TEXT[code]) for i, m in enumerate(messages)]
            # 200: inSIM's and Ardary's clients read the #00x code in the body (PHP's
            # file_get_contents, the seeds' own example, returns false on any 4xx).
            return _respond(results, old_form)
        # Phone numbers are most of the CPU: half of them are checked in the worker
        # process (only they travel: whole judged messages cost more to send back).
        raw_numbers = [raw_number(m) if isinstance(m, dict) else None for m in messages]
        checked = await self.workers.split(normalise_batch, raw_numbers, rules.region)
        judged = [judge_message(i, m, header, priority, rules, c)
                  for i, (m, c) in enumerate(zip(messages, checked, strict=True))]
        stopped = await self.records.opted_out(account.login, [j.new.phone_number for j in judged if j.new])
        if stopped:
            judged = [replace(j, new=None, errors=(E_OPTED_OUT,), detail=ERROR_TEXT[E_OPTED_OUT])
                      if j.new is not None and j.new.phone_number in stopped else j for j in judged]
        good = [j.new for j in judged if j.new is not None]
        if mode == "test":
            return _respond([_test_answer(account.login, j) for j in judged], old_form)
        enqueued = await self.jobs.enqueue(account.login, good) if good else []
        if any(e.created for e in enqueued):
            self.on_enqueued()
        results = _answers(account.login, judged, enqueued, rules.public_url)
        log.info("account %s: %d message(s) accepted, %d refused", account.login, len(good),
                 len(judged) - len(good))
        return _respond(results, old_form)

    # -- contacts -----------------------------------------------------------------

    async def contact(self, request: web.Request) -> web.Response:
        body = await bodies.object_body(request)
        account, _, _ = self.auth.header_auth(body)
        contacts = body.get("contacts")
        if isinstance(contacts, dict):
            contacts = [contacts]
        if not isinstance(contacts, list):
            raise ApiError(400, "'contacts' must be a list of contacts")
        limit = self.settings.config.api.max_messages
        if len(contacts) > limit:
            raise ApiError(413, f"{len(contacts)} contacts in one request; at most {limit}")
        answers: list[dict[str, Any]] = []
        valid: list[tuple[int, Contact]] = []
        for item in contacts:
            judged = judge_contact(item, self.settings.region)
            if judged.contact is not None:
                valid.append((len(answers), judged.contact))
            answers.append(_contact_answer(judged))
        if valid:
            # The last of two entries with the same number wins, in one transaction.
            created = await self.records.upsert_contacts(account.login, [c for _, c in valid])
            for (i, _), new in zip(valid, created, strict=True):
                answers[i]["created"] = new
        log.info("account %s: %d contact(s) saved, %d refused", account.login, len(valid),
                 len(answers) - len(valid))
        return json_response({"data": {"contact": answers}})

    # -- click-to-call --------------------------------------------------------------

    async def click_to_call(self, request: web.Request) -> web.Response:
        body = await bodies.object_body(request)
        account, header, _ = self.auth.header_auth(body)
        raw = header.get("phone_number", header.get("phonenumber", body.get("phone_number")))
        try:
            number = numbers.normalise(raw, self.settings.region)
        except ValueError as exc:
            return json_response([{"info": str(exc)[:200], "result": "failed", "errors": [E_NUMBER]}],
                                 status=400)
        if not self.phones_online(account.login):
            return json_response([{"info": CALL_INFO, "result": "failed", "errors": [CALL_NOT_CONNECTED],
                                   "error_message": "no phone of this account that can place calls "
                                                    "is connected"}])
        [enqueued] = await self.jobs.enqueue(account.login, [NewJob(kind="call", phone_number=number,
                                                                    priority=2, ttl_s=CALL_TTL_S)])
        self.on_enqueued()
        log.info("account %s: call to %s queued (%s)", account.login, mask_number(number),
                 enqueued.job.id_sms_api)
        return json_response([{"info": CALL_INFO, "result": "success", "errors": [],
                               "id_sms_api": enqueued.job.id_sms_api}])

    # -- call notes -------------------------------------------------------------------

    async def qualification(self, request: web.Request) -> web.Response:
        body = await bodies.params(request)
        if isinstance(body.get("header"), (dict, list)):
            account, header, _ = self.auth.header_auth(body)
        else:
            account, header = self.auth.bearer_enabled(request, body), {}
        raw = body.get("phone_number", body.get("from", header.get("phone_number")))
        text = body.get("qualification", body.get("note"))
        number = require_number(raw, self.settings.region)
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "'qualification' must be a non-empty string")
        if len(text) > MAX_NOTE_CHARS:
            raise ApiError(400, f"'qualification' is longer than {MAX_NOTE_CHARS} characters")
        note_id = await self.records.add_call_note(account.login, number, text.strip(), source="interface")
        return success({"id": note_id, "phone_number": number, "qualification": text.strip(),
                        "source": "interface", "title": "call_qualification_from_interface"})


# -- idempotency -----------------------------------------------------------------------

def _without_link(text: str, public_url: str) -> str:
    """The text with its tracked link's random code blanked (two sends of one
    message differ only there)."""
    return re.sub(re.escape(public_url) + r"/l/[A-Za-z0-9]+", "[Link]", text)


def _same_content(new: NewJob, job: Job, public_url: str) -> bool:
    """Whether a message sent again under an ``id_sms_api`` already used is the
    same message: same number, text and tracked URL."""
    if new.phone_number != job.phone_number or new.url != job.url or new.kind != job.kind:
        return False
    return new.message == job.message or (
        new.url is not None and _without_link(new.message, public_url) == _without_link(job.message, public_url))


def _reused(login: str, j: Judged, enqueued: Enqueued, public_url: str) -> dict[str, Any]:
    """An ``id_sms_api`` already used for another message: refused, never dropped silently."""
    job = enqueued.job
    detail = (f"id_sms_api {job.id_sms_api!r} was already used for another message (to {mask_number(job.phone_number)}"
              f", {'the same' if job.message == j.message else 'another'} text); nothing was sent for this one: "
              "give each message its own id_sms_api")
    return _answer(login, j, errors=(E_REUSED,), detail=detail)


# -- answers -------------------------------------------------------------------------

def _answers(login: str, judged: list[Judged], enqueued: list[Enqueued], public_url: str) -> list[dict[str, Any]]:
    """Each message's answer, in order: ``enqueued`` answers the judged ones that have a job to queue,
    in their order. A job created now is the message itself; one found under its id_sms_api may be
    another message."""
    out: list[dict[str, Any]] = []
    stored = iter(enqueued)
    for j in judged:
        if j.new is None:
            out.append(_answer(login, j))
            continue
        e = next(stored)
        job = e.job
        if not e.created and not _same_content(j.new, job, public_url):
            out.append(_reused(login, j, e, public_url))
            continue
        out.append({"id_sms_api": job.id_sms_api, "sms_per_message": job.parts, "user": login,
                    "sent_time": iso(job.due), "phone_number": job.phone_number, "message": job.message, "sent": 1})
    return out


def _answer(login: str | None, j: Judged, *, errors: tuple[str, ...] = (), detail: str | None = None) -> dict[str, Any]:
    """A refused message's answer (``errors``: the codes, else the judged message's)."""
    errors = errors or j.errors
    return {"id_sms_api": j.id_sms_api, "sms_per_message": 0, "user": login, "sent_time": None,
            "phone_number": j.phone_number, "message": j.message, "sent": 0,
            "error": list(errors), "error_message": detail or j.detail or ERROR_TEXT[errors[0]]}


def _test_answer(login: str, j: Judged) -> dict[str, Any]:
    """``mode: test``: what would have been queued; nothing is."""
    if j.new is None:
        return _answer(login, j)
    new = j.new
    return {"id_sms_api": new.id_sms_api or new_id_sms_api(), "sms_per_message": new.parts, "user": login,
            "sent_time": iso(new.due if new.due is not None else time.time()),
            "phone_number": new.phone_number, "message": new.message, "sent": 1, "mode": "test"}


def _respond(results: list[dict[str, Any]], old_form: bool, status: int = 200) -> web.Response:
    if old_form:
        return ardary.send_answer(results, status)
    return json_response(results, status=status)


def _contact_answer(j: JudgedContact) -> dict[str, Any]:
    if j.not_an_object:
        return {"result": "failed", "errors": list(j.errors), "error_message": "a contact must be an object"}
    answer: dict[str, Any] = {"firstname": j.firstname, "lastname": j.lastname, "phonenumber": j.phone_number,
                              "email": j.email, "adress": j.address}
    answer.update(j.spellings)
    if j.number_key not in (None, "phonenumber"):
        answer[j.number_key] = j.phone_number
    answer["result"] = "success" if j.contact is not None else "failed"
    if j.errors:
        answer["errors"] = list(j.errors)
        answer["error_message"] = "; ".join(CONTACT_ERROR_TEXT[e] for e in j.errors)
    return answer
