"""Call notes from the phone: "NOTE <number>: <text>" sent to the gateway's
number from a listed sender reaches the CRM as call_qualification_from_mobile."""

from __future__ import annotations

import json

import aiohttp
from aiohttp import web
from api_util import BEARER, serving
from conftest import api_url, make_config, wait_until

OPERATOR = "+33611111111"


async def test_a_note_sms_from_the_operator_is_a_mobile_qualification(tmp_path):
    got: list[tuple[str, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        for key, value in request.query.items():
            got.append((key, json.loads(value)))
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
            "webhook_url": f"http://127.0.0.1:{port}/hook", "call_note_senders": ["06 11 11 11 11"]}],
            api={"default_region": "FR"})
        async with serving(config) as daemon, aiohttp.ClientSession() as http:
            for sender, text in ((OPERATOR, "note 0612345678 : Interested customer - callback next week"),
                                 ("+33699999999", "NOTE 0612345678: not the operator"),
                                 (OPERATOR, "just a message")):
                async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=BEARER,
                                     json={"from": sender, "text": text}) as resp:
                    assert resp.status == 200
            await wait_until(lambda: len(got) == 3, what="three webhooks")
        by_kind: dict[str, list[dict]] = {}
        for key, body in got:
            by_kind.setdefault(key, []).append(body)
        [note] = by_kind["qualification"]
        assert note["title"] == "call_qualification_from_mobile" and note["from"] == "+33612345678"
        assert note["qualification"] == "Interested customer - callback next week"
        assert sorted(m["message"] for m in by_kind["message"]) == ["NOTE 0612345678: not the operator",
                                                                    "just a message"]
    finally:
        await runner.cleanup()
