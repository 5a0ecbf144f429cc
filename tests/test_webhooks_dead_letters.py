"""An event its receiver keeps refusing holds back no other message's events,
ends dead (visible through the API) and can be sent again."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web
from api_util import BEARER, serving
from conftest import api_url, make_config, running, timeout, wait_until


@pytest.mark.parametrize("refusal", [422, 500])
async def test_a_refused_event_dies_alone_and_is_replayed(tmp_path, refusal):
    """422: the receiver refuses that one event; 500: it throws on it (the seed's
    Express receiver did on a '%'), which also pauses the account a moment."""
    received: list[str] = []
    refuse = {"on": True}

    async def hook(request: web.Request) -> web.Response:
        sms = json.loads(request.query["message"])
        if refuse["on"] and "poison" in sms["message"]:
            return web.Response(status=refusal, text="cannot digest this one")
        received.append(sms["message"])
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        config = make_config(tmp_path, accounts=[{
            "login": "user@email.com", "access_key": "your-access-key",
            "webhook_url": f"http://127.0.0.1:{port}/hook"}],
            webhooks={"max_age": timeout(1.5), "backoff_initial": 0.05, "backoff_max": 0.2})
        async with serving(config) as daemon, aiohttp.ClientSession() as http:
            for text in ("poison", "one", "two", "three"):
                async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=BEARER,
                                     json={"from": "+33612345678", "text": text}) as resp:
                    assert resp.status == 200
            # The others arrive while the refused one is still being retried.
            await wait_until(lambda: sorted(received) == ["one", "three", "two"], what="the other messages")
            assert (await daemon.store.outbox_counts())["dead"] == 0

            async def dead():
                async with http.get(api_url(daemon, "/api/v1/webhooks/dead"), headers=BEARER) as resp:
                    assert resp.status == 200
                    return (await resp.json())["data"]

            [letter] = await wait_until(dead, within=10, what="the refused event dead")
            assert letter["event"] == "sms_received" and letter["payload"]["message"] == "poison"
            assert letter["last_error"].startswith(f"HTTP {refusal}") and letter["attempts"] >= 2
            refuse["on"] = False
            async with http.post(api_url(daemon, "/api/v1/webhooks/replay"), headers=BEARER,
                                 json={"ids": "all"}) as resp:
                assert resp.status == 400
            async with http.post(api_url(daemon, "/api/v1/webhooks/replay"), headers=BEARER,
                                 json={"ids": [letter["id"]]}) as resp:
                assert resp.status == 200 and (await resp.json())["data"] == {"replayed": 1}
            await wait_until(lambda: "poison" in received, what="the replayed event delivered")
            assert await dead() == []

            async def all_four_delivered() -> bool:  # recorded right after the answer (in batches)
                counts = await daemon.store.outbox_counts()
                return counts["dead"] == 0 and counts["delivered"] == 4
            await wait_until(all_four_delivered, what="the four recorded as delivered")
    finally:
        await runner.cleanup()


async def test_simbridge_webhooks_dead_and_replay(tmp_path):
    from ops_util import cli, write_config

    from bridge import config as config_module

    received: list[str] = []
    refuse = {"on": True}

    async def hook(request: web.Request) -> web.Response:
        text = json.loads(request.query["message"])["message"]
        if refuse["on"]:
            return web.Response(status=410, text="gone")
        received.append(text)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        path, _, _ = write_config(
            tmp_path, extra=f'webhook_url = "http://127.0.0.1:{port}/hook"',
            api_extra=f"[webhooks]\nmax_age = {timeout(1.0)}\nbackoff_initial = 0.05\nbackoff_max = 0.2\n")
        async with running(config_module.load(path)) as daemon, aiohttp.ClientSession() as http:
            await wait_until(lambda: daemon.dispatcher.sessions, what="phone online")
            async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=BEARER,
                                 json={"from": "+33612345678", "text": "late"}) as resp:
                assert resp.status == 200
            await wait_until(lambda: daemon.store.dead_letters("user@email.com"), within=10, what="dead")
            code, out, err = await cli("webhooks", "dead", "--config", str(path))
            assert code == 0, err
            assert "sms_received" in out and "HTTP 410" in out and "1 dead webhook event(s)" in out
            refuse["on"] = False
            code, out, err = await cli("webhooks", "replay", "--config", str(path))
            assert code == 0 and "1 webhook event(s) will be sent again" in out, err
            await wait_until(lambda: received == ["late"], what="the replayed event")
    finally:
        await runner.cleanup()


async def test_a_long_sms_reaches_a_receiver_with_default_limits_when_the_url_is_capped(tmp_path):
    """A 23-part SMS makes a GET URL aiohttp's server (like nginx and Apache) refuses
    with its default request-line limit; ``webhook_max_url`` cuts its text to fit."""
    text = ("你好，明天上午十点见 & 100% 确定 + 谢谢。\n" * 60)[:1541]
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(request.query["message"]))
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/hook", hook)
    runner = web.AppRunner(app)  # aiohttp's defaults: a request line over 8,190 bytes is refused
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        account = {"login": "user@email.com", "access_key": "your-access-key",
                   "webhook_url": f"http://127.0.0.1:{port}/hook"}
        async with aiohttp.ClientSession() as http:
            from bridge.webhooks import forms
            whole = forms.insim_url(account["webhook_url"], "message", {"message": text})
            async with http.get(whole) as resp:
                assert resp.status == 400  # what an uncut event would meet, every time
        config = make_config(tmp_path, accounts=[{**account, "webhook_max_url": 8000}])
        async with serving(config) as daemon, aiohttp.ClientSession() as http:
            async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=BEARER,
                                 json={"from": "+33612345678", "text": text}) as resp:
                assert resp.status == 200
            [sms] = await wait_until(lambda: received, what="the long SMS delivered")
            assert sms["truncated"] is True and text.startswith(sms["message"][:-1])
            assert (await daemon.store.outbox_counts())["dead"] == 0
    finally:
        await runner.cleanup()
