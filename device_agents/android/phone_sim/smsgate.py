"""SMSGate for Android (capcom6/android-sms-gateway, Apache-2.0), local-server mode.

What it does here follows its sources (app/src/main/java/me/capcom/smsgateway/…):

* ``modules/localserver/WebService.kt``: a Ktor server on the configured port
  (default 8080, ``LocalServerSettings.kt``); ``GET /health`` without auth;
  everything else behind HTTP Basic auth, realm "Access to SMS Gateway", the
  username (default ``sms``) and password shown in the app; message routes
  under both ``/message`` and ``/messages``; webhooks under ``/webhook`` and
  ``/webhooks``; errors as ``{"message": …}`` (``StatusPages``: bad request
  400, not found 404, else 500).
* ``routes/MessagesRoutes.kt``: ``POST`` takes ``{id?, message | textMessage{text}
  | dataMessage{data, port}, phoneNumbers[], simNumber?, withDeliveryReport?
  (default true), isEncrypted?, ttl? | validUntil?, priority?}`` and answers
  202 with ``{id, state: "Pending", recipients: [{phoneNumber, state, error}],
  isEncrypted, states: {Pending: date}}``; 400 "Must specify exactly one of:
  textMessage, dataMessage, or message", "Text message is empty",
  "phoneNumbers is empty", "simNumber must be >= 1"; ``GET /{id}`` the same
  shape or 404.
* Message states Pending → Processed (handed to SmsManager) → Sent →
  Delivered, or Failed, per recipient (``data/entities/Message.kt``).
* ``modules/webhooks/WebHooksService.kt`` + ``WebHookUrlPolicy.kt``: a webhook
  URL must be https — except ``http://127.0.0.1…``, allowed on purpose for
  local receivers — and an https URL to a private/loopback host is refused;
  an unknown event is refused ("Unsupported event"); ``POST`` upserts by id;
  events ``sms:received``, ``sms:sent``, ``sms:delivered``, ``sms:failed``,
  ``system:ping`` …; deliveries are ``{id, webhookId, event, deviceId,
  payload}`` POSTed as JSON, retried with exponential back-off while the
  answer is not 2xx (``workers/SendWebhookWorker.kt``; ``retryCount``).
* Payloads (``webhooks/payload/SmsEventPayload.kt``): ``messageId``,
  ``phoneNumber``, ``simNumber`` and ``partsCount``+``sentAt`` /
  ``deliveredAt`` / ``failedAt``+``reason`` / ``message``+``receivedAt``.

What the user does once on the phone, and how it shows over ADB:
* grant the SMS permissions the app asks for on first start — ``dumpsys
  package me.capcom.smsgateway`` (``granted=true``), or ``pm grant`` over ADB
  (the manifest requests them, so the shell may grant them);
* switch "Local server" on and tap "Online" — ``dumpsys activity services
  me.capcom.smsgateway`` lists ``.modules.localserver.WebService`` and the port
  answers ``GET /health`` through ``adb forward``;
* read the username/password on the screen (not readable over ADB: the app's
  data is private to it, ``run-as`` refuses a release build);
* battery optimisation off — ``dumpsys deviceidle whitelist`` (settable over
  ADB with ``+me.capcom.smsgateway``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import ClientSession, ClientTimeout, web

from .packages import P, holds
from .sms import RESULT_OK, SmsRequest
from .state import STATUS_COMPLETE, Package

if TYPE_CHECKING:
    from .phone import VirtualPhone

log = logging.getLogger(__name__)

PACKAGE = "me.capcom.smsgateway"
WEB_SERVICE = f"{PACKAGE}/.modules.localserver.WebService"
# app/src/main/AndroidManifest.xml (the permissions this stand-in relies on).
REQUESTED = (P + "SEND_SMS", P + "RECEIVE_SMS", P + "READ_SMS", P + "READ_PHONE_STATE",
             P + "RECEIVE_MMS", P + "RECEIVE_WAP_PUSH", P + "INTERNET", P + "ACCESS_NETWORK_STATE",
             P + "FOREGROUND_SERVICE", P + "RECEIVE_BOOT_COMPLETED", P + "WAKE_LOCK",
             P + "POST_NOTIFICATIONS", P + "REQUEST_IGNORE_BATTERY_OPTIMIZATIONS",
             P + "ACCESS_WIFI_STATE")
EVENTS = ("sms:received", "sms:batch:received", "sms:sent", "sms:delivered", "sms:failed",
          "system:ping", "sms:data-received", "mms:received", "mms:downloaded", "app:started",
          "sms:cancelled")
SMS_RESULT_NAMES = {1: "RESULT_ERROR_GENERIC_FAILURE", 2: "RESULT_ERROR_RADIO_OFF",
                    3: "RESULT_ERROR_NULL_PDU", 4: "RESULT_ERROR_NO_SERVICE",
                    5: "RESULT_ERROR_LIMIT_EXCEEDED"}


def _nanoid(size: int = 21) -> str:
    # jnanoid's default alphabet and size (NanoIdUtils.randomNanoId()).
    alphabet = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(size))


def _forbidden_host(host: str) -> bool:
    # WebHookUrlPolicy.isForbiddenHost (literal host check, no DNS).
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith((".localhost", ".local", ".internal")):
        return True
    parts = h.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        o = [int(p) for p in parts]
        return (o[0] in (0, 10, 127) or (o[0] == 169 and o[1] == 254) or (o[0] == 172 and 16 <= o[1] <= 31)
                or (o[0] == 192 and o[1] == 168) or (o[0] == 192 and o[1] == 0 and o[2] == 0)
                or (o[0] == 100 and 64 <= o[1] <= 127) or o[0] >= 224)
    if ":" in h:
        return h in ("::", "::1") or h.startswith(("fe80", "fec0", "fc", "fd", "ff"))
    return False


class SmsGateApp:
    def __init__(self, phone: VirtualPhone, *, webhook_backoff: float = 1.0, retry_count: int = 15) -> None:
        self.phone = phone
        self.package = Package(PACKAGE, requested=REQUESTED, uid=10234, version="1.40.0")
        data = phone.state.app_data.setdefault("smsgate", {})
        data.setdefault("local_server_enabled", False)
        data.setdefault("online", False)
        data.setdefault("username", "sms")
        # LocalServerSettings.kt: username "sms"; password an 8-character nanoid made on first use.
        data.setdefault("password", _nanoid(8))
        data.setdefault("port", 8080)
        data.setdefault("device_id", _nanoid())
        data.setdefault("signing_key", secrets.token_hex(16))
        data.setdefault("webhooks", [])
        self.data = data
        self.webhook_backoff = webhook_backoff
        self.retry_count = retry_count
        self.messages: dict[str, dict[str, Any]] = {}
        self.webhook_log: list[dict[str, Any]] = []  # every delivery attempt
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the user's taps ------------------------------------------------------------------------
    def screen(self) -> dict[str, Any]:
        """What the app's "Home" tab shows in local-server mode."""
        return {"local_server": self.data["local_server_enabled"], "online": self.running,
                "address": f"127.0.0.1:{self.data['port']}", "username": self.data["username"],
                "password": self.data["password"], "device_id": self.data["device_id"],
                "signing_key": self.data["signing_key"]}

    async def user_enable_local_server(self, *, start: bool = True) -> None:
        """Settings → "Local Server" on, then "Online" on the home screen."""
        self.data["local_server_enabled"] = True
        self.data["online"] = start
        self.phone.state.save()
        if start:
            await self.launch()

    def user_grant_permissions(self) -> None:
        """The dialogs on first start: Allow for SMS and phone."""
        for perm in (P + "SEND_SMS", P + "RECEIVE_SMS", P + "READ_SMS", P + "READ_PHONE_STATE"):
            self.package.granted.add(perm)
        self.phone.state.save()

    # -- the app's lifecycle -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._runner is not None

    async def launch(self) -> None:
        if self.data["local_server_enabled"] and self.data["online"] and self._runner is None:
            app = web.Application(middlewares=[self._errors, self._auth])
            app.add_routes([web.get("/health", self._health), web.get("/", self._root),
                            web.get("/device", self._device)])
            for base in ("/message", "/messages"):
                app.add_routes([web.post(base, self._post_message), web.get(base, self._list_messages),
                                web.get(base + "/{id}", self._get_message)])
            for base in ("/webhook", "/webhooks"):
                app.add_routes([web.get(base, self._list_webhooks), web.post(base, self._post_webhook),
                                web.delete(base + "/{id}", self._delete_webhook)])
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self.phone.loopback, self.data["port"]).start()
            self._runner = runner

    async def boot(self) -> None:
        # The app's boot receiver starts the local server again when it was on.
        await self.launch()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        for task in list(self._tasks):
            task.cancel()

    def start_service(self, cls: str, *, foreground: bool) -> str | None:
        # Its services are not exported (AndroidManifest.xml): the shell may not start them.
        return f"Error: Requires permission not exported from uid {self.package.uid}"

    def running_services(self) -> list[str]:
        return [WEB_SERVICE] if self.running else []

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- HTTP ------------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.status != 401:
                return web.json_response({"message": exc.reason}, status=exc.status)
            raise

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
                ok = hmac.compare_digest(user, self.data["username"]) and \
                    hmac.compare_digest(password, self.data["password"])
        if not ok:
            return web.Response(status=401, headers={
                "WWW-Authenticate": 'Basic realm="Access to SMS Gateway", charset=UTF-8'})
        return await handler(request)

    def _date(self, ts: float | None = None) -> str:
        from zoneinfo import ZoneInfo
        when = dt.datetime.fromtimestamp(time.time() if ts is None else ts, ZoneInfo(self.phone.state.timezone))
        return when.isoformat(timespec="milliseconds")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "pass", "version": self.package.version, "releaseId": 1,
                                  "checks": {}})

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.phone.state.props["ro.product.model"]})

    async def _device(self, request: web.Request) -> web.Response:
        p = self.phone.state.props
        now = self._date()
        return web.json_response([{"id": self.data["device_id"],
                                   "name": f"{p['ro.product.manufacturer']}/{p['ro.product.name']}",
                                   "createdAt": now, "updatedAt": now, "lastSeen": now}])

    @staticmethod
    def _bad(message: str) -> web.Response:
        return web.json_response({"message": message}, status=400)

    async def _post_message(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return self._bad(f"Failed to convert request body to class PostMessageRequest: {exc}")
        if not isinstance(body, dict):
            return self._bad("Failed to convert request body to class PostMessageRequest")
        kinds = [k for k in ("textMessage", "dataMessage", "message") if body.get(k) is not None]
        if not kinds:
            return self._bad("Must specify exactly one of: textMessage, dataMessage, or message")
        if len(kinds) > 1:
            return self._bad("Cannot specify multiple message types simultaneously")
        if "dataMessage" in kinds:
            return self._bad("Data messages are not supported by this phone")
        text = body["message"] if "message" in kinds else (body["textMessage"] or {}).get("text")
        if not isinstance(text, str) or not text:
            return self._bad("Text message is empty")
        numbers = body.get("phoneNumbers")
        if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
            return self._bad("Failed to convert request body to class PostMessageRequest")
        if not numbers:
            return self._bad("phoneNumbers is empty")
        sim = body.get("simNumber")
        if sim is not None and (not isinstance(sim, int) or sim < 1):
            return self._bad("simNumber must be >= 1")
        ttl, valid_until = body.get("ttl"), body.get("validUntil")
        if ttl is not None and valid_until is not None:
            return self._bad("fields conflict: ttl and validUntil")
        deadline = None
        if ttl is not None:
            if not isinstance(ttl, int) or ttl < 0:
                return self._bad("ttl must be a non-negative number of seconds")
            deadline = time.time() + ttl
        elif isinstance(valid_until, str):
            try:
                deadline = dt.datetime.fromisoformat(valid_until.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return self._bad("validUntil is not a date")
        msg_id = body.get("id") or _nanoid()
        if msg_id in self.messages:
            return self._bad(f"Message with id {msg_id} already exists")
        now = self._date()
        msg = {"id": msg_id, "state": "Pending", "isEncrypted": bool(body.get("isEncrypted", False)),
               "recipients": [{"phoneNumber": n, "state": "Pending", "error": None} for n in numbers],
               "states": {"Pending": now}, "text": text, "sim": sim,
               "withDeliveryReport": body.get("withDeliveryReport", True) is not False,
               "deadline": deadline}
        self.messages[msg_id] = msg
        self._spawn(self._process(msg))
        return web.json_response(self._public(msg, initial=True), status=202)

    def _public(self, msg: dict[str, Any], *, initial: bool = False) -> dict[str, Any]:
        if initial:
            return {"id": msg["id"], "state": "Pending", "isEncrypted": msg["isEncrypted"],
                    "recipients": [{"phoneNumber": r["phoneNumber"], "state": "Pending", "error": None}
                                   for r in msg["recipients"]],
                    "states": {"Pending": msg["states"]["Pending"]}}
        return {"id": msg["id"], "state": msg["state"], "isEncrypted": msg["isEncrypted"],
                "recipients": [dict(r) for r in msg["recipients"]], "states": dict(msg["states"])}

    async def _get_message(self, request: web.Request) -> web.Response:
        msg = self.messages.get(request.match_info["id"])
        if msg is None:
            return web.json_response({"message": "Message not found"}, status=404)
        return web.json_response(self._public(msg))

    async def _list_messages(self, request: web.Request) -> web.Response:
        return web.json_response([self._public(m) for m in self.messages.values()])

    # -- sending -------------------------------------------------------------------------------------
    def _set_state(self, msg: dict[str, Any]) -> None:
        states = [r["state"] for r in msg["recipients"]]
        order = ["Pending", "Processed", "Sent", "Delivered"]
        if all(s == "Failed" for s in states):
            new = "Failed"
        else:
            live = [s for s in states if s != "Failed"]
            new = min(live, key=order.index)
        if new != msg["state"]:
            msg["state"] = new
            msg["states"][new] = self._date()

    async def _process(self, msg: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        sim = msg["sim"] or 1
        for recipient in msg["recipients"]:
            number = recipient["phoneNumber"]
            if msg["deadline"] is not None and time.time() > msg["deadline"]:
                self._recipient_failed(msg, recipient, "TTL expired", sim)
                continue
            if not holds(self.package, P + "SEND_SMS"):
                # Context.enforceCallingPermission's text (SmsManager → ISms.sendText).
                self._recipient_failed(msg, recipient, f"Sending SMS message: Neither user "
                                       f"{self.package.uid} nor current process has {P}SEND_SMS.", sim)
                continue
            recipient["state"] = "Processed"
            self._set_state(msg)
            self._send(msg, recipient, number, sim)

    def _send(self, msg: dict[str, Any], recipient: dict[str, Any], number: str, sim: int) -> None:
        sent_parts: dict[int, int] = {}
        delivered: dict[int, int] = {}

        def on_event(kind: str, info: dict[str, Any]) -> None:
            parts = info["parts"]
            if kind == "sent":
                sent_parts[info["part"]] = info["result"]
                if len(sent_parts) < parts:
                    return
                bad = [c for c in sent_parts.values() if c != RESULT_OK]
                if bad:
                    self._recipient_failed(msg, recipient,
                                           f"Send result: {SMS_RESULT_NAMES.get(bad[0], str(bad[0]))}", sim)
                    return
                recipient["state"] = "Sent"
                self._set_state(msg)
                self._emit("sms:sent", {"messageId": msg["id"], "phoneNumber": number, "simNumber": sim,
                                        "partsCount": parts, "sentAt": self._date()})
            elif kind == "delivered":
                delivered[info["part"]] = info["status"]
                if len(delivered) < parts or recipient["state"] == "Failed":
                    return
                if all(s == STATUS_COMPLETE for s in delivered.values()):
                    recipient["state"] = "Delivered"
                    self._set_state(msg)
                    self._emit("sms:delivered", {"messageId": msg["id"], "phoneNumber": number,
                                                 "simNumber": sim, "deliveredAt": self._date()})
                else:
                    self._recipient_failed(msg, recipient, "Delivery failed", sim)

        self.phone.sms.send(SmsRequest(app=PACKAGE, address=number, text=msg["text"], sub_id=sim,
                                       want_delivery=msg["withDeliveryReport"], on_event=on_event))

    def _recipient_failed(self, msg: dict[str, Any], recipient: dict[str, Any], reason: str, sim: int) -> None:
        recipient["state"] = "Failed"
        recipient["error"] = reason
        self._set_state(msg)
        self._emit("sms:failed", {"messageId": msg["id"], "phoneNumber": recipient["phoneNumber"],
                                  "simNumber": sim, "failedAt": self._date(), "reason": reason})

    def receive_sms(self, row: dict[str, Any]) -> None:
        # The SMS_RECEIVED broadcast reaches only holders of RECEIVE_SMS.
        if not holds(self.package, P + "RECEIVE_SMS"):
            return
        digest = hashlib.sha256(f"{row['address']}|{row['body']}|{row['date']}".encode()).hexdigest()[:16]
        self._emit("sms:received", {"messageId": digest, "message": row["body"],
                                    "phoneNumber": row["address"], "simNumber": row.get("sub_id", 1),
                                    "receivedAt": self._date(row["date"] / 1000)})

    # -- webhooks ------------------------------------------------------------------------------------
    async def _list_webhooks(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": h["id"], "url": h["url"], "event": h["event"]}
                                  for h in self.data["webhooks"]])

    async def _post_webhook(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return self._bad(f"Failed to convert request body to class WebHookDTO: {exc}")
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return self._bad("Failed to convert request body to class WebHookDTO")
        url = body["url"]
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        if url.startswith("http://127.0.0.1"):
            pass  # WebHooksService.replace: plain http allowed for the phone's own loopback only
        elif parts.scheme != "https" or not parts.hostname:
            return self._bad("Invalid URL")
        elif _forbidden_host(parts.hostname):
            return self._bad("Invalid URL: private or loopback host")
        if body.get("event") not in EVENTS:
            return self._bad("Unsupported event")
        hook = {"id": body.get("id") or _nanoid(), "url": url, "event": body["event"]}
        self.data["webhooks"] = [h for h in self.data["webhooks"] if h["id"] != hook["id"]] + [hook]
        self.phone.state.save()
        return web.json_response(hook, status=201)

    async def _delete_webhook(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        self.data["webhooks"] = [h for h in self.data["webhooks"] if h["id"] != ident]
        self.phone.state.save()
        return web.Response(status=204)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        # WebHooksService.emit: local webhooks fire only while the local server is enabled.
        if not self.data["local_server_enabled"]:
            return
        for hook in self.data["webhooks"]:
            if hook["event"] == event:
                delivery = {"id": _nanoid(), "webhookId": hook["id"], "event": event,
                            "deviceId": self.data["device_id"], "payload": payload}
                self._spawn(self._deliver(hook["url"], delivery))

    async def _deliver(self, url: str, delivery: dict[str, Any]) -> None:
        # The phone's 127.0.0.1 is phone.loopback on this machine.
        from urllib.parse import urlsplit, urlunsplit
        parts = urlsplit(url)
        if parts.hostname == "127.0.0.1":
            netloc = self.phone.loopback + (f":{parts.port}" if parts.port else "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        body = json.dumps(delivery, ensure_ascii=False).encode()
        delay = self.webhook_backoff
        for attempt in range(self.retry_count):
            ts = str(int(time.time()))
            # webhooks/plugins/PayloadSingingPlugin.kt: X-Timestamp = Unix seconds, X-Signature =
            # hex HMAC-SHA256(signing key, body text + timestamp).
            sig = hmac.new(self.data["signing_key"].encode(), body + ts.encode(), hashlib.sha256).hexdigest()
            status: int | str
            try:
                async with ClientSession(timeout=ClientTimeout(total=30, connect=5)) as session, \
                        session.post(url, data=body, headers={
                            "Content-Type": "application/json", "X-Signature": sig, "X-Timestamp": ts,
                            "User-Agent": f"{PACKAGE}/{self.package.version}"}) as resp:
                    status = resp.status
            except (TimeoutError, OSError) as exc:
                status = f"{type(exc).__name__}: {exc}"
            self.webhook_log.append({"url": url, "event": delivery["event"], "attempt": attempt + 1,
                                     "status": status})
            if isinstance(status, int) and 200 <= status < 300:
                return
            await asyncio.sleep(delay)
            delay *= 2
