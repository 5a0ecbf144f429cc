"""Webhook delivery from the durable outbox.

The store records every event the upstream CRM is owed in its ``outbox``
table, in the same transaction as the change that raised it (see
``SqliteStore._event``). The :class:`WebhookDeliverer` here pushes those
events out over HTTP and records the outcome back in the store:

- **inSIM form** (``webhook_format = "insim"``, the default): ``GET
  webhook_url?{message|calls|status|clics|qualification}=<URL-encoded JSON>``
  with the fields of seed 000's examples, field for field, plus ``event_id``.
- **JSON form** (``webhook_format = "json"``): ``POST`` of a JSON event,
  signed with HMAC-SHA256 over ``"<timestamp>.<body>"`` with the account's
  ``webhook_secret`` (headers ``X-Simbridge-Timestamp`` and
  ``X-Simbridge-Signature: sha256=<hex>``).

Delivery is at-least-once: an event is marked delivered only after a 2xx
answer. Anything else is retried with exponential backoff and jitter until
``[webhooks] max_age`` after it was recorded, then it is marked dead with its
last error. Events with the same ``order_key`` (one outgoing message, one
device's inbound SMS, …) go strictly in the order they were recorded: the
store only hands out the first undelivered event of each key. A receiver that
fails with a connection error, a timeout, 429 or 5xx pauses its whole account
(with backoff) instead of being hammered, and when it answers again every event
of that account that was waiting to be retried is due at once.

The formatting functions (:func:`insim_request`, :func:`json_request`) are
pure; the deliverer only moves them over the network. See docs/webhooks.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from bridge.config import AccountConfig, Config
from bridge.core import events as st
from bridge.store.model import OutboxRow
from bridge.store.protocols import Store

log = logging.getLogger(__name__)

USER_AGENT = "simbridge-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024  # we read (and ignore) at most this much of an answer
MAX_ERROR_CHARS = 300
ACCOUNT_PAUSE_MAX = 60.0  # a receiver that is down is tried again at least this often

# inSIM GET parameter of each canonical event kind.
INSIM_PARAM = {
    st.SMS_RECEIVED: "message",
    st.CALL_INCOMING: "calls", st.CALL_OUTGOING: "calls", st.CALL_MISSED: "calls",
    st.SMS_SENT: "status", st.SMS_DELIVERED: "status", st.SMS_FAILED: "status",
    st.LINK_CLICKED: "clics",
    st.CALL_QUALIFICATION: "qualification",
}
CALL_TITLES = {st.CALL_INCOMING: "incoming_call", st.CALL_OUTGOING: "outgoing_call",
               st.CALL_MISSED: "missed_call"}
STATUS_WORDS = {st.SMS_SENT: "sent", st.SMS_DELIVERED: "received", st.SMS_FAILED: "failed"}
# Fields of the store's payloads that hold epoch seconds (turned into ISO text in the JSON form).
TIME_FIELDS = ("date", "call_time", "clicked_at", "at")

SIGNATURE_HEADER = "X-Simbridge-Signature"
TIMESTAMP_HEADER = "X-Simbridge-Timestamp"
EVENT_HEADER = "X-Simbridge-Event"
EVENT_ID_HEADER = "X-Simbridge-Event-Id"


# ----------------------------------------------------------------------------
# Formatting (pure)


def iso_utc(ts: float) -> str:
    """``2025-01-15T14:30:00.000Z``, as inSIM writes ISO times."""
    ms = int(round(ts * 1000))
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def local_time(ts: float, zone: ZoneInfo) -> str:
    """``2025-01-15 14:30:00`` in ``zone``, as inSIM writes wall-clock times."""
    return dt.datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S")


def hms(seconds: float) -> str:
    """``00:05:23``; hours may pass 99 for absurdly long calls."""
    total = max(0, int(round(seconds)))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


_COMPONENT_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
_ASCII_ESCAPES = {c: f"%{c:02X}" for c in range(128) if c not in _COMPONENT_SAFE}


def encode_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``: UTF-8, everything but ``A-Za-z0-9-_.!~*'()`` escaped."""
    if text.isascii():
        return text.translate(_ASCII_ESCAPES)  # the common case, in C
    return quote(text, safe="!~*'()")


def _time(value: Any, fallback: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else fallback


class Unrenderable(ValueError):
    """The event cannot be carried by the account's webhook form."""


def insim_body(kind: str, event: dict[str, Any], *, login: str, zone: ZoneInfo) -> tuple[str, dict[str, Any]]:
    """The inSIM GET parameter and JSON object for one outbox event (seed 000)."""
    at = _time(event.get("at"), time.time())
    body: dict[str, Any]
    if kind == st.SMS_RECEIVED:
        body = {"device_identification": login, "title": "incoming_sms", "from": event.get("from", ""),
                "message": event.get("message", ""), "date": iso_utc(_time(event.get("date"), at))}
    elif kind in CALL_TITLES:
        missed = kind == st.CALL_MISSED
        body = {"device_identification": login, "title": CALL_TITLES[kind],
                "phone_number": event.get("phone_number", ""),
                "call_time": local_time(_time(event.get("call_time"), at), zone),
                "duration": "0" if missed else hms(_time(event.get("duration_s"), 0.0))}
    elif kind in STATUS_WORDS:
        body = {"user": login, "phone_number": event.get("phone_number", ""), "status": STATUS_WORDS[kind],
                "date_status": iso_utc(at), "id_sms_api": event.get("id_sms_api", "")}
        if kind == st.SMS_FAILED:
            body["error"] = event.get("reason") or event.get("state") or "failed"  # extension
    elif kind == st.LINK_CLICKED:
        body = {"id_sms_api": event.get("id_sms_api", ""), "clicked_link": "clicked_link",
                "phone_number": event.get("phone_number", ""),
                "link": event.get("link", event.get("url", "")),
                "date": local_time(_time(event.get("date", event.get("clicked_at")), at), zone)}
    elif kind == st.CALL_QUALIFICATION:
        source = event.get("source", "mobile")
        title = "call_qualification_from_interface" if source in ("interface", "api", "web") \
            else "call_qualification_from_mobile"
        body = {"device_identification": login, "title": title,
                "from": event.get("from", event.get("phone_number", "")),
                "date": local_time(_time(event.get("date"), at), zone),
                "qualification": event.get("qualification", "")}
    else:
        raise Unrenderable(f"event kind {kind!r} has no inSIM webhook form (use webhook_format = \"json\")")
    if "event_id" in event:
        body["event_id"] = event["event_id"]
    return INSIM_PARAM[kind], body


def insim_url(webhook_url: str, param: str, body: dict[str, Any]) -> str:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return f"{webhook_url}{'&' if '?' in webhook_url else '?'}{param}={encode_component(text)}"


def json_body(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """The JSON form's event object: envelope plus the store's fields, times as ISO text."""
    at = _time(event.get("at"), time.time())
    data = {k: v for k, v in event.items() if k not in ("event_id", "kind", "account", "at")}
    for key in TIME_FIELDS:
        if key in data and isinstance(data[key], (int, float)) and not isinstance(data[key], bool):
            data[key] = iso_utc(data[key])
    body: dict[str, Any] = {"event_id": event.get("event_id"), "event": kind, "account": event.get("account"),
                            "created_at": iso_utc(at)}
    if "id_sms_api" in event:
        body["id_sms_api"] = event["id_sms_api"]
    body["data"] = data
    return body


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with the secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make for one event."""
    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def build_request(row: OutboxRow, account: AccountConfig, zone: ZoneInfo, *, now: float | None = None) -> Request:
    """The request that delivers ``row`` to ``account``'s webhook; Unrenderable if none can."""
    if not account.webhook_url:
        raise Unrenderable(f"account {account.login!r} has no webhook_url")
    try:
        event = json.loads(row.payload)
    except ValueError as exc:
        raise Unrenderable(f"stored payload is not JSON: {exc}") from None
    event.setdefault("event_id", f"evt_{row.id}")
    if account.webhook_format == "json":
        body = json.dumps(json_body(row.kind, event), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(now if now is not None else time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp,
                   EVENT_HEADER: row.kind, EVENT_ID_HEADER: str(event["event_id"])}
        if account.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(account.webhook_secret, timestamp, body)
        return Request("POST", account.webhook_url, body, headers)
    param, body_obj = insim_body(row.kind, event, login=account.login, zone=zone)
    return Request("GET", insim_url(account.webhook_url, param, body_obj))


def backoff(attempts: int, *, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay after failed attempt number ``attempts``: doubling from ``initial``,
    capped, with "equal jitter" (half fixed, half random) so retries spread out."""
    delay = min(cap, initial * 2 ** min(max(0, attempts - 1), 64))
    return delay / 2 + (rng or random).random() * delay / 2


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


# ----------------------------------------------------------------------------
# A small HTTP/1.1 keep-alive client
#
# Webhooks need little of HTTP: one request, a status code, connections kept
# alive. aiohttp's client tops out near 2,000 requests/s on a 2-core box with
# nothing else to do; this one costs a fraction of that per request, which
# leaves room for the store and the API. Redirects are not followed; the
# answer's body is read (to keep the connection usable) and thrown away.


class HttpError(Exception):
    """The receiver's answer was not HTTP we understand, or the connection broke."""


MAX_HEADER_BYTES = 64 * 1024


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0
        self.idle_since = time.monotonic()
        self._buf = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._keep = True
        # parse state of the current answer
        self._status = 0
        self._body_start = -1
        self._length: int | None = None
        self._chunked = False
        self._chunk_pos = 0

    # protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.closed = True  # unasked-for bytes: do not reuse
            if self.transport is not None:
                self.transport.close()
            return
        self._buf += data
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._keep = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._status and self._body_start >= 0 and self._length is None and not self._chunked:
                waiter.set_result(self._status)  # body delimited by the close (HTTP/1.0 style)
            else:
                waiter.set_exception(HttpError("connection closed before a complete answer")
                                     if exc is None else exc)

    # requests
    async def request(self, data: bytes) -> int:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._buf.clear()
        self._status, self._body_start, self._length, self._chunked, self._chunk_pos = 0, -1, None, False, 0
        self._keep = True
        assert self.transport is not None
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None
            self.used += 1
            self.idle_since = time.monotonic()

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def _done(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._status)

    def _parse(self) -> None:
        buf = self._buf
        while self._body_start < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise HttpError(f"answer headers longer than {MAX_HEADER_BYTES} bytes")
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HttpError(f"not an HTTP/1.x answer: {head[0][:60]!r}")
            status = int(parts[1])
            if 100 <= status < 200:  # interim answer: skip it
                del buf[:end + 4]
                continue
            self._status = status
            self._keep = parts[0] == "HTTP/1.1"
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                if name == "content-length":
                    if not value.isdigit():
                        raise HttpError(f"bad Content-Length {value[:20]!r}")
                    self._length = int(value)
                elif name == "transfer-encoding":
                    self._chunked = "chunked" in value.lower()
                elif name == "connection":
                    tokens = value.lower()
                    if "close" in tokens:
                        self._keep = False
                    elif "keep-alive" in tokens:
                        self._keep = True
            self._body_start = end + 4
            self._chunk_pos = self._body_start
            if status in (204, 304):
                self._length = 0
        if self._chunked:
            self._parse_chunks()
        elif self._length is not None:
            if self._length > self.max_body:
                self._keep = False  # not worth reading: answer now, drop the connection
                self._done()
                self.close()
            elif len(buf) - self._body_start >= self._length:
                if len(buf) - self._body_start > self._length:
                    self._keep = False  # more than was announced
                self._done()
        else:
            self._keep = False  # body ends when the connection does
            if len(buf) - self._body_start > self.max_body:
                self._done()
                self.close()

    def _parse_chunks(self) -> None:
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n", self._chunk_pos)
            if eol < 0:
                break
            size_text = bytes(buf[self._chunk_pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # trailers end
                if end < 0 and buf[eol:eol + 4] != b"\r\n\r\n":
                    return
                self._done()
                return
            if eol + 2 + size + 2 > len(buf):
                break
            self._chunk_pos = eol + 2 + size + 2
            del buf[self._body_start:self._chunk_pos]  # keep the buffer small
            self._chunk_pos = self._body_start
        if len(buf) - self._body_start > self.max_body:
            self._keep = False
            self._done()
            self.close()


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    host_header: str

    @classmethod
    def of(cls, url: str) -> tuple[_Target, str]:
        # The query holds the event (inSIM form): parse only what comes before
        # it, once per webhook URL.
        base, sep, query = url.partition("?")
        target, path = cls._base(base.partition("#")[0])
        return target, f"{path}?{query.partition('#')[0]}" if sep else path

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _base(url: str) -> tuple[_Target, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url[:80]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = (parts.scheme, port) in (("http", 80), ("https", 443))
        return _Target(parts.scheme, host, port, shown if default else f"{shown}:{port}"), parts.path or "/"


class HttpPool:
    """Keep-alive connections per (scheme, host, port); one request per connection at a time."""

    def __init__(self, *, max_response_bytes: int = MAX_RESPONSE_BYTES, idle_timeout: float = 50.0) -> None:
        self.max_response_bytes = max_response_bytes
        self.idle_timeout = idle_timeout
        self._idle: dict[_Target, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl: Any = None
        self.connects = 0

    def _ssl_context(self) -> Any:
        if self._ssl is None:
            import ssl
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        ssl = self._ssl_context() if target.scheme == "https" else None
        _, conn = await loop.create_connection(lambda: _Connection(self.max_response_bytes), target.host,
                                               target.port, ssl=ssl,
                                               server_hostname=target.host if ssl else None)
        self.connects += 1
        self._all.add(conn)
        return conn

    def _take_idle(self, target: _Target) -> _Connection | None:
        idle = self._idle.get(target)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < self.idle_timeout:
                return conn
            conn.close()
            self._all.discard(conn)
        return None

    async def request(self, request: Request, *, timeout: float) -> int:
        """Send ``request``; its status code. TimeoutError, OSError or HttpError otherwise."""
        target, path = _Target.of(request.url)
        lines = [f"{request.method} {path} HTTP/1.1", f"Host: {target.host_header}", f"User-Agent: {USER_AGENT}",
                 "Accept: */*"]
        for name, value in request.headers.items():
            lines.append(f"{name}: {value}")
        if request.body is not None or request.method == "POST":
            lines.append(f"Content-Length: {len(request.body or b'')}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (request.body or b"")
        async with asyncio.timeout(timeout):
            conn = self._take_idle(target)
            if conn is not None:
                try:
                    status = await self._send(conn, data)
                except (OSError, HttpError):
                    # A kept-alive connection the receiver had closed: once more on a new one.
                    conn = None
                else:
                    self._put_back(target, conn)
                    return status
            conn = await self._connect(target)
            status = await self._send(conn, data)
            self._put_back(target, conn)
            return status

    async def _send(self, conn: _Connection, data: bytes) -> int:
        try:
            return await conn.request(data)
        except BaseException:
            conn.close()
            self._all.discard(conn)
            raise

    def _put_back(self, target: _Target, conn: _Connection) -> None:
        if conn.reusable:
            self._idle.setdefault(target, []).append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()


# ----------------------------------------------------------------------------
# Delivery


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
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


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
        self._session: HttpPool | None = None
        self.running = asyncio.Event()

    def reload(self, config: Config) -> None:
        self.config = config
        self._zone = ZoneInfo(config.api.timezone)
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
        self._session = HttpPool(max_response_bytes=MAX_RESPONSE_BYTES)
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(cfg.concurrency):
                    tg.create_task(self._worker())
                tg.create_task(self._settler())
                self.running.set()
                await self._claimer()
        finally:
            self.running.clear()
            self.store.set_outbox_listener(None)
            self._session.close()
            self._session = None
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
            outcome = await self._attempt(row)
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
        assert self._session is not None
        started = time.monotonic()
        self.stats.requests += 1
        error = ""
        account_failure = False
        try:
            status = await self._session.request(request, timeout=self.config.webhooks.timeout)
            if 200 <= status < 300:
                self.stats.request_seconds += time.monotonic() - started
                return _Outcome(row, "delivered", at=time.time())
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += " (redirects are not followed: set webhook_url to the final URL)"
            account_failure = status >= 500 or status == 429
        except TimeoutError:
            error = f"no answer within {self.config.webhooks.timeout:g} s"
            account_failure = True
        except (OSError, HttpError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            account_failure = True
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
