"""Sending through SMS Gateway for Android (capcom6/android-sms-gateway, Apache-2.0)
in its local-server mode, driven over adb.

The contract is the app's local API (its OpenAPI document and ``docs/``; the
routes in ``app/src/main/java/me/capcom/smsgateway/modules/localserver/``):

* Basic auth, user ``sms`` by default, the password shown in the app's
  *Local Server* section (``WebService.kt``). The app keeps it in its private
  preferences, which adb cannot read: it goes in the device's config.
* ``GET /health`` (no auth): ``{"status": "pass"|"warn"|"fail", …}``.
* ``POST /message`` ``{"id", "message", "phoneNumbers": [..], "simNumber"
  (1-based), "withDeliveryReport"}`` → 202 with the message's state; 400
  ``{"message": …}`` for a bad request (empty text, ``simNumber must be >= 1``,
  an invalid number); 401 for wrong credentials.
* ``GET /message/{id}`` → ``{"id", "state", "recipients": [{"phoneNumber",
  "state", "error"}], "states": {…}}``; 404 when it does not know the id.
  States (``ProcessingState``): Pending, Processed, Sent, Delivered, Failed.
* ``POST /webhooks`` ``{"id", "url", "event"}`` registers a webhook (201);
  the URL must be https, except ``http://127.0.0.1`` (``WebHooksService``,
  ``WebHookUrlPolicy``): so the bridge's receiver is reached through
  ``adb reverse`` on the phone's own loopback. Deliveries are POSTed as
  ``{"id", "webhookId", "event", "deviceId", "payload": {"messageId",
  "phoneNumber", "simNumber", …}}`` with ``partsCount``/``sentAt`` for
  ``sms:sent``, ``deliveredAt`` for ``sms:delivered``, ``failedAt``/``reason``
  for ``sms:failed`` (``SmsEventPayload.kt``), retried until answered 2xx.

Android reports every part of a multipart message on its own (a sent and a
delivery intent per part, ``SmsManager.sendMultipartTextMessage``); the app
folds them per recipient: sent when all parts are sent, delivered when all
are delivered, failed as soon as one fails. :func:`fold` keeps the job's state
moving forward only, whatever order the webhooks and polls arrive in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from device_agents import protocol

log = logging.getLogger(__name__)

PACKAGE = "me.capcom.smsgateway"
DEFAULT_PORT = 8080  # LocalServerSettings default
DEFAULT_USER = "sms"
WEBHOOK_EVENTS = ("sms:sent", "sms:delivered", "sms:failed")
# Android permissions the app requests (its AndroidManifest.xml) that the bridge grants over adb.
PERMISSIONS = ("SEND_SMS", "READ_PHONE_STATE")

STATE_TO_JOB = {"Pending": None, "Processed": None, "Sent": protocol.JOB_SENT,
                "Delivered": protocol.JOB_DELIVERED, "Failed": protocol.JOB_FAILED}
EVENT_TO_JOB = {"sms:sent": protocol.JOB_SENT, "sms:delivered": protocol.JOB_DELIVERED,
                "sms:failed": protocol.JOB_FAILED}
_RANK = {None: 0, protocol.JOB_ACCEPTED: 0, protocol.JOB_UNCONFIRMED: 1, protocol.JOB_SENT: 2,
         protocol.JOB_DELIVERED: 3, protocol.JOB_FAILED: 3}


def fold(current: str | None, new: str | None) -> str | None:
    """The job state after ``new`` arrives: forward only; delivered and failed are final."""
    if new is None or current in (protocol.JOB_DELIVERED, protocol.JOB_FAILED):
        return None
    return new if _RANK[new] > _RANK.get(current, 0) else None


class GateError(Exception):
    """The app answered, but not as asked (its ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class GateUnreachable(Exception):
    """Nothing answers on the app's port (its local server is off, or the phone went)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str | None  # job state, None while pending
    reason: str | None = None
    parts: int | None = None


def outcome_of(message: dict[str, Any]) -> Outcome:
    """A ``GET /message/{id}`` answer, for its one recipient."""
    recipients = message.get("recipients") or [{}]
    r = recipients[0] if isinstance(recipients[0], dict) else {}
    state = STATE_TO_JOB.get(str(r.get("state") or message.get("state")))
    reason = r.get("error") if state == protocol.JOB_FAILED else None
    return Outcome(state, str(reason)[:200] if reason else None)


class GateClient:
    """The app's HTTP API on ``127.0.0.1:<local port>`` (an ``adb forward``)."""

    def __init__(self, *, port: int, user: str, password: str, timeout: float = 15.0) -> None:
        self.base = f"http://127.0.0.1:{port}"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._session = ClientSession(timeout=ClientTimeout(total=timeout))

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
        try:
            async with self._session.request(method, self.base + path, json=body,
                                             headers=self._headers if auth else None) as resp:
                raw = await resp.read()
                status = resp.status
        except (ClientError, OSError, TimeoutError) as exc:
            raise GateUnreachable(f"{type(exc).__name__}: {exc}") from None
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = {"message": raw[:200].decode(errors="replace")}
        if status >= 400:
            message = data.get("message") if isinstance(data, dict) else None
            raise GateError(status, str(message or raw[:200].decode(errors="replace") or status))
        return status, data

    async def health(self) -> dict[str, Any]:
        _, data = await self._call("GET", "/health", auth=False)
        return data if isinstance(data, dict) else {}

    async def check_auth(self) -> None:
        await self._call("GET", "/")

    async def send(self, *, message_id: str, to: str, text: str, sim_number: int | None,
                   delivery_report: bool) -> Outcome:
        body: dict[str, Any] = {"id": message_id, "message": text, "phoneNumbers": [to],
                                "withDeliveryReport": delivery_report}
        if sim_number is not None:
            body["simNumber"] = sim_number
        _, data = await self._call("POST", "/message", body)
        return outcome_of(data if isinstance(data, dict) else {})

    async def get(self, message_id: str) -> Outcome | None:
        try:
            _, data = await self._call("GET", f"/message/{message_id}")
        except GateError as exc:
            if exc.status == 404:
                return None
            raise
        return outcome_of(data if isinstance(data, dict) else {})

    async def register_webhooks(self, url: str, prefix: str) -> None:
        for event in WEBHOOK_EVENTS:
            # A fixed id per event: registering again replaces, never duplicates (upsert).
            await self._call("POST", "/webhooks", {"id": f"{prefix}-{event.replace(':', '-')}",
                                                   "url": url, "event": event})


class WebhookReceiver:
    """The bridge's end of the app's webhooks: ``POST /smsgate/<secret>`` on
    127.0.0.1 (the phone reaches it through ``adb reverse``)."""

    def __init__(self, secret: str, on_event: Any) -> None:
        self.secret = secret
        self.on_event = on_event  # (message_id, Outcome) -> None
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def path(self) -> str:
        return f"/smsgate/{self.secret}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"message": "not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("payload"), dict):
            return web.json_response({"message": "no payload"}, status=400)
        event = body.get("event")
        payload = body["payload"]
        state = EVENT_TO_JOB.get(str(event))
        message_id = payload.get("messageId")
        if state is None or not isinstance(message_id, str):
            return web.json_response({"ignored": event})  # other events: answered, so not retried
        parts = payload.get("partsCount")
        reason = payload.get("reason") if state == protocol.JOB_FAILED else None
        outcome = Outcome(state, str(reason)[:200] if reason else None,
                          parts if isinstance(parts, int) and not isinstance(parts, bool) else None)
        # Answered only once the outcome is in the agent's journal: a crash before
        # that leaves the app retrying, nothing is lost.
        await asyncio.to_thread(lambda: None)
        self.on_event(message_id, outcome)
        return web.json_response({"ok": True})
