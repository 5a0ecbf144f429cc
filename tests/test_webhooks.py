"""Webhooks end to end: a real daemon with a virtual phone, a real HTTP receiver
that parses what it gets exactly as seed 000's Flask, PHP and Node receivers
do, receivers that go away and come back, restarts, and the signed JSON form.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import aiohttp
import pytest
from aiohttp import web
from conftest import api_url, make_config, running, wait_until

from bridge.webhooks import signing

LOGIN = "user@email.com"
AUTH = {"login": LOGIN, "accessKey": "your-access-key"}
BEARER = {"Authorization": "Bearer your-access-key"}
SECRET = "s3cret-for-tests"
PARAMS = ("message", "calls", "status", "clics", "qualification")
# Fast retries so that outages last a fraction of a second in tests. The slow
# poll shows that nothing waits for it: recorded events wake the deliverer.
FAST = {"backoff_initial": 0.05, "backoff_max": 0.4, "poll_interval": 60.0, "timeout": 2.0, "lease": 5.0}


@dataclass
class Got:
    param: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""


class Receiver:
    """The customer's webhook endpoint, on a real socket.

    GET /webhook is read as seed 000's receivers read it: Flask's
    ``json.loads(unquote(request.args['message']))``, Node's
    ``JSON.parse(decodeURIComponent(req.query.message))`` (the same thing) and
    PHP's ``json_decode($_GET['message'])`` (no second decoding) must all agree.
    POST /json takes the signed JSON form. ``status`` is what it answers.
    """

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.status = 200
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    @property
    def json_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/json"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/webhook", self._insim)
        app.router.add_post("/json", self._json)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _insim(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        # Flask / PHP decode the query string as a form (werkzeug: url_decode).
        args = parse_qs(request.query_string, keep_blank_values=True)
        for param in PARAMS:
            if param in args:
                flask = json.loads(unquote(args[param][0]))
                php = json.loads(args[param][0])
                assert flask == php, (flask, php)
                self.got.append(Got(param, flask))
        return web.Response(text="OK")

    async def _json(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        raw = await request.read()
        self.got.append(Got("json", json.loads(raw), dict(request.headers), raw))
        return web.Response(text="OK")

    def of(self, param: str) -> list[dict[str, Any]]:
        return [g.body for g in self.got if g.param == param]


@pytest.fixture
async def receiver():
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def hook_config(tmp_path, url: str, *, fmt: str = "insim", **webhooks: Any):
    account: dict[str, Any] = {"login": LOGIN, "access_key": "your-access-key", "webhook_url": url}
    if fmt == "json":
        account.update(webhook_format="json", webhook_secret=SECRET)
    return make_config(tmp_path, accounts=[account], webhooks={**FAST, **webhooks})


async def sendsms(http: aiohttp.ClientSession, daemon, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with http.post(api_url(daemon, "/api/v1/sendsms"), json={"header": AUTH, "messages": messages}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def simulate(http: aiohttp.ClientSession, daemon, what: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(api_url(daemon, f"/api/v1/simulate/{what}"), json=body, headers=BEARER) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def statuses(receiver: Receiver) -> dict[str, list[str]]:
    """Per message id, the statuses the receiver got, in the order it got them."""
    out: dict[str, list[str]] = {}
    for body in receiver.of("status"):
        out.setdefault(body["id_sms_api"], []).append(body["status"])
    return out


ISO_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
LOCAL = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"


# ----------------------------------------------------------------------------
# The full path, inSIM form


async def test_sendsms_gives_status_sent_then_received(tmp_path, receiver):
    async with running(hook_config(tmp_path, receiver.url)) as daemon, aiohttp.ClientSession() as http:
        [answer] = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "Hello"}])
        ident = answer["id_sms_api"]
        await wait_until(lambda: statuses(receiver).get(ident) == ["sent", "received"], what="sent, received")
        sent, received = receiver.of("status")
        for body, word in ((sent, "sent"), (received, "received")):
            assert set(body) == {"user", "phone_number", "status", "date_status", "id_sms_api", "event_id"}
            assert body["user"] == LOGIN and body["phone_number"] == "+33612345678"
            assert body["status"] == word and body["id_sms_api"] == ident
            assert body["date_status"].endswith("Z") and len(body["date_status"]) == 24
        assert sent["event_id"] != received["event_id"]
        # The receiver has answered; the deliverer records it right after (settled in batches).
        await wait_until(lambda: daemon.webhooks.stats.delivered == 2, what="both recorded as delivered")
        assert daemon.webhooks.stats.failed_attempts == 0
        counts = await daemon.store.outbox_counts()
        assert counts == {"pending": 0, "delivered": 2, "dead": 0}


async def test_failed_sms_is_status_failed_with_error(tmp_path, receiver):
    config = make_config(tmp_path, accounts=[{"login": LOGIN, "access_key": "your-access-key",
                                              "webhook_url": receiver.url}],
                         devices=[{"id": "sim-1", "kind": "virtual", "account": LOGIN, "latency": 0.0,
                                   "jitter": 0.0, "delivery_delay": 0.0, "max_per_minute": 0,
                                   "fail_prefixes": ["+33699"]}],
                         webhooks=FAST)
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        [answer] = await sendsms(http, daemon, [{"phone_number": "+33699000001", "message": "doomed"}])
        await wait_until(lambda: statuses(receiver).get(answer["id_sms_api"]) == ["failed"], what="failed")
        [body] = receiver.of("status")
        assert set(body) == {"user", "phone_number", "status", "date_status", "id_sms_api", "event_id", "error"}
        assert body["error"]


async def test_incoming_sms_and_calls(tmp_path, receiver):
    async with running(hook_config(tmp_path, receiver.url)) as daemon, aiohttp.ClientSession() as http:
        text = "Hi, I confirm my appointment — à 14h30 & 100%+ sûr ✅"
        await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": text})
        await simulate(http, daemon, "call", {"from": "+33612345679", "duration": 323})
        await simulate(http, daemon, "call", {"from": "+33612345670", "missed": True})
        await wait_until(lambda: len(receiver.of("message")) == 1 and len(receiver.of("calls")) == 2,
                         what="message and calls webhooks")
        [sms] = receiver.of("message")
        assert set(sms) == {"device_identification", "title", "from", "message", "date", "event_id"}
        assert sms["device_identification"] == LOGIN and sms["title"] == "incoming_sms"
        assert sms["from"] == "+33612345678" and sms["message"] == text
        assert sms["date"].endswith("Z") and "T" in sms["date"]
        answered, missed = receiver.of("calls")
        for call in (answered, missed):
            assert set(call) == {"device_identification", "title", "phone_number", "call_time", "duration",
                                 "event_id"}
            assert len(call["call_time"]) == 19 and call["call_time"][10] == " "
        assert answered["title"] == "incoming_call" and answered["duration"] == "00:05:23"
        assert answered["phone_number"] == "+33612345679"
        assert missed["title"] == "missed_call" and missed["duration"] == "0"


# ----------------------------------------------------------------------------
# Outages and restarts


async def test_receiver_answering_503_then_back_gets_everything_in_order(tmp_path, receiver):
    receiver.status = 503
    async with running(hook_config(tmp_path, receiver.url)) as daemon, aiohttp.ClientSession() as http:
        answers = await sendsms(http, daemon, [{"phone_number": f"+3361234{i:04d}", "message": f"m{i}"}
                                               for i in range(20)])
        await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "while down"})
        ids = [a["id_sms_api"] for a in answers]
        # Every message is delivered on the phone while the receiver refuses.
        await wait_until(lambda: _outbox_total(daemon, 41), what="all 41 events recorded")
        await wait_until(lambda: daemon.webhooks.stats.failed_attempts >= 3, what="a few failed attempts")
        assert receiver.got == []
        receiver.status = 200
        await wait_until(lambda: len(receiver.got) == 41, within=15, what="every event after the outage")
        got = statuses(receiver)
        assert {i: got.get(i) for i in ids} == {i: ["sent", "received"] for i in ids}
        assert [m["message"] for m in receiver.of("message")] == ["while down"]
        # The receiver has answered; the deliverer records that right after.
        await wait_until(lambda: _all_delivered(daemon), what="every event marked delivered")


async def _all_delivered(daemon) -> bool:
    rows = await daemon.store.outbox()
    return bool(rows) and all(r["delivered_at"] for r in rows)


async def _outbox_total(daemon, n: int) -> bool:
    counts = await daemon.store.outbox_counts()
    return counts["pending"] + counts["delivered"] + counts["dead"] >= n


async def test_receiver_gone_across_a_daemon_restart_loses_nothing(tmp_path, receiver):
    await receiver.stop()  # connections refused
    config = hook_config(tmp_path, receiver.url)
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        answers = await sendsms(http, daemon, [{"phone_number": f"+3361234{i:04d}", "message": f"m{i}"}
                                               for i in range(10)])
        await simulate(http, daemon, "call", {"from": "+33612345679", "duration": 5})
        await wait_until(lambda: _outbox_total(daemon, 21), what="all 21 events recorded")
        await wait_until(lambda: daemon.webhooks.stats.failed_attempts >= 2, what="failed attempts")
    ids = [a["id_sms_api"] for a in answers]
    await receiver.start()  # same port
    async with running(config) as daemon:
        await wait_until(lambda: len(receiver.got) == 21, within=15, what="every event after the restart")
        got = statuses(receiver)
        assert {i: got.get(i) for i in ids} == {i: ["sent", "received"] for i in ids}
        assert [c["title"] for c in receiver.of("calls")] == ["incoming_call"]
        # The receiver has answered; the deliverer records that right after.
        await wait_until(lambda: _all_delivered(daemon), what="every event marked delivered")
        rows = await daemon.store.outbox()
        assert len(rows) == 21 and all(r["delivered_at"] for r in rows)
        failed = [json.loads(r["payload"]) for r in rows]
        assert len({p["event_id"] for p in failed}) == 21


async def test_slow_receiver_times_out_and_is_retried(tmp_path):
    calls: list[float] = []

    async def slow_then_fast(request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.sleep(5)  # longer than the 0.3 s timeout below: the deliverer hangs up
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/webhook", slow_then_fast)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    try:
        async with running(hook_config(tmp_path, url, timeout=0.3, lease=1.0)) as daemon, \
                aiohttp.ClientSession() as http:
            await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "hello"})
            await wait_until(lambda: daemon.webhooks.stats.delivered == 1, what="delivered after a timeout")
            assert daemon.webhooks.stats.failed_attempts == 1
            [row] = await daemon.store.outbox()
            assert row["delivered_at"]
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------
# JSON form


async def test_json_form_is_signed_and_carries_every_state(tmp_path, receiver):
    async with running(hook_config(tmp_path, receiver.json_url, fmt="json")) as daemon, \
            aiohttp.ClientSession() as http:
        [answer] = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "Hello"}])
        await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "yes"})
        await wait_until(lambda: len(receiver.got) == 5, what="5 JSON events")
        kinds = [g.body["event"] for g in receiver.got if g.body.get("id_sms_api") == answer["id_sms_api"]]
        assert kinds == ["sms_queued", "sms_dispatched", "sms_sent", "sms_delivered"]
        for g in receiver.got:
            ts = g.headers[signing.TIMESTAMP_HEADER]
            sig = g.headers[signing.SIGNATURE_HEADER]
            assert sig.startswith("sha256=")
            # What docs/webhooks.md tells receivers to do:
            import hashlib
            import hmac
            expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + g.raw, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(expected, sig)
            assert signing.verify(SECRET, ts, g.raw, sig)
            assert not signing.verify("wrong", ts, g.raw, sig)
            assert not signing.verify(SECRET, ts, g.raw + b" ", sig)
            assert g.headers[signing.EVENT_HEADER] == g.body["event"]
            assert g.headers[signing.EVENT_ID_HEADER] == g.body["event_id"]
            assert g.body["account"] == LOGIN and g.body["created_at"].endswith("Z")
        [inbound] = [g.body for g in receiver.got if g.body["event"] == "sms_received"]
        assert inbound["data"]["from"] == "+33612345678" and inbound["data"]["message"] == "yes"
        assert inbound["data"]["date"].endswith("Z")


async def test_event_older_than_max_age_is_dead_with_its_last_error(tmp_path, receiver):
    receiver.status = 404
    async with running(hook_config(tmp_path, receiver.url, max_age=0.5)) as daemon, \
            aiohttp.ClientSession() as http:
        await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "nobody home"})
        await wait_until(lambda: daemon.webhooks.stats.dead == 1, what="the event given up on")
        [row] = await daemon.store._run(daemon.store._select_dicts, "SELECT * FROM outbox", ())
        assert row["dead"] == 1 and row["last_error"] == "HTTP 404" and row["attempts"] >= 2
        assert row["delivered_at"] is None
        assert await daemon.store.outbox_counts() == {"pending": 0, "delivered": 0, "dead": 1}
        # a later event is not held back by a dead one
        receiver.status = 200
        await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "second"})
        await wait_until(lambda: [m["message"] for m in receiver.of("message")] == ["second"], what="second")
