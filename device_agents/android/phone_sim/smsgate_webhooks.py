"""SMSGate's webhooks: registration over the local API, and their delivery.

Sources (capcom6/android-sms-gateway, app/src/main/java/me/capcom/smsgateway/modules/webhooks/):
``WebHooksService.kt`` (``replace``: a URL must be https, except ``http://127.0.0.1…``
— the phone's own loopback, allowed on purpose; an unknown event is refused with
"Unsupported event"; upsert by id; ``emit``: local webhooks fire only while the
local server is enabled), ``WebHookUrlPolicy.kt`` (an https URL to a literal
private, loopback, link-local or multicast host is refused; no DNS lookup),
``domain/WebHookEvent.kt`` (the event names), ``workers/SendWebhookWorker.kt``
(POST JSON ``{id, webhookId, event, deviceId, payload}``; not 2xx → retry with
exponential back-off, at most ``retryCount`` = 15 tries, WebhooksSettings.kt),
``plugins/PayloadSingingPlugin.kt`` (``X-Timestamp`` Unix seconds,
``X-Signature`` hex HMAC-SHA256 of body text + timestamp).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

if TYPE_CHECKING:
    from .phone import VirtualPhone

PACKAGE = "me.capcom.smsgateway"
EVENTS = ("sms:received", "sms:batch:received", "sms:sent", "sms:delivered", "sms:failed",
          "system:ping", "sms:data-received", "mms:received", "mms:downloaded", "app:started",
          "sms:cancelled")


def nanoid(size: int = 21) -> str:
    # jnanoid's default alphabet and size (NanoIdUtils.randomNanoId()).
    alphabet = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(size))


def _bad(message: str) -> web.Response:
    return web.json_response({"message": message}, status=400)


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




class Webhooks:
    def __init__(self, phone: VirtualPhone, data: dict[str, Any], *, version: str,
                 backoff: float = 1.0, retry_count: int = 15) -> None:
        self.phone = phone
        self.data = data  # the app's settings: webhooks, device_id, signing_key, local_server_enabled
        self.version = version
        self.webhook_backoff = backoff
        self.retry_count = retry_count
        self.webhook_log: list[dict[str, Any]] = []  # every delivery attempt
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def list_route(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": h["id"], "url": h["url"], "event": h["event"]}
                                  for h in self.data["webhooks"]])

    async def post_route(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return _bad(f"Failed to convert request body to class WebHookDTO: {exc}")
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            return _bad("Failed to convert request body to class WebHookDTO")
        url = body["url"]
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        if url.startswith("http://127.0.0.1"):
            pass  # WebHooksService.replace: plain http allowed for the phone's own loopback only
        elif parts.scheme != "https" or not parts.hostname:
            return _bad("Invalid URL")
        elif _forbidden_host(parts.hostname):
            return _bad("Invalid URL: private or loopback host")
        if body.get("event") not in EVENTS:
            return _bad("Unsupported event")
        hook = {"id": body.get("id") or nanoid(), "url": url, "event": body["event"]}
        self.data["webhooks"] = [h for h in self.data["webhooks"] if h["id"] != hook["id"]] + [hook]
        self.phone.state.save()
        return web.json_response(hook, status=201)

    async def delete_route(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        self.data["webhooks"] = [h for h in self.data["webhooks"] if h["id"] != ident]
        self.phone.state.save()
        return web.Response(status=204)

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        # WebHooksService.emit: local webhooks fire only while the local server is enabled.
        if not self.data["local_server_enabled"]:
            return
        for hook in self.data["webhooks"]:
            if hook["event"] == event:
                delivery = {"id": nanoid(), "webhookId": hook["id"], "event": event,
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
                            "User-Agent": f"{PACKAGE}/{self.version}"}) as resp:
                    status = resp.status
            except (TimeoutError, OSError, ClientError) as exc:
                # Any failed attempt is retried (SendWebhookWorker.kt: `catch (e: Throwable)` and a
                # status outside 200..299 both give Result.Retry, up to settings.retryCount), e.g. a
                # connection dropped while adb reverse has no listener behind it.
                status = f"{type(exc).__name__}: {exc}"
            self.webhook_log.append({"url": url, "event": delivery["event"], "attempt": attempt + 1,
                                     "status": status})
            if isinstance(status, int) and 200 <= status < 300:
                return
            await asyncio.sleep(delay)
            delay *= 2
