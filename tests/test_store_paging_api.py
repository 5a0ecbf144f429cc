"""GET /api/v1/sms pages by cursor (keyset): following next_cursor lists the
same messages as one long page; skip still works; a foreign cursor is a 400."""

from __future__ import annotations

import aiohttp
from conftest import api_url, make_config, running

BEARER = {"Authorization": "Bearer your-access-key"}


async def test_next_cursor_walks_the_list(tmp_path):
    config = make_config(tmp_path, devices=[])  # no device: the messages stay queued, the list stays still
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        for n in range(3):
            async with http.post(api_url(daemon, "/api/v1/sendsms"), json={
                    "header": {"login": "user@email.com", "accessKey": "your-access-key"},
                    "messages": [{"phone_number": "+33612345678", "message": f"m{n}-{i}"} for i in range(3)]}) as r:
                assert r.status == 200

        async def page(**query: str):
            async with http.get(api_url(daemon, "/api/v1/sms"), headers=BEARER, params=query) as r:
                return r.status, await r.json()
        _, whole = await page(take="100")
        assert len(whole["data"]) == 9 and whole["next_cursor"] is None
        walked, cursor = [], None
        while True:
            status, body = await page(take="4", **({"cursor": cursor} if cursor else {}))
            assert status == 200
            walked += body["data"]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert [m["id"] for m in walked] == [m["id"] for m in whole["data"]]
        _, skipped = await page(take="2", skip="5")
        assert [m["id"] for m in skipped["data"]] == [m["id"] for m in whole["data"][5:7]]
        status, refused = await page(cursor="somewhere")
        assert status == 400 and "cursor" in refused["message"]
