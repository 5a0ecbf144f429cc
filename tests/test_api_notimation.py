"""The Notimation-style read side: GET /api/v1/sms, /api/v1/sms/{id},
/api/v1/phone_number/{country}/{number}."""

from __future__ import annotations

import aiohttp
from api_util import HEADER, get, post, radio, serving
from conftest import make_config, wait_until


async def test_list_and_show_outgoing_and_inbound(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.dispatcher.sessions, what="phone online")
        status, sent = await post(http, daemon, "/api/v1/sendsms", headers={}, json_body={
            "header": HEADER, "messages": [{"phone_number": "+33612345678", "message": f"m{i}",
                                            "id_sms_api": f"id-{i}"} for i in range(3)]})
        assert status == 200
        await wait_until(lambda: len(radio(daemon)) == 3, what="three sent")
        status, _ = await post(http, daemon, "/api/v1/simulate/incoming-sms",
                               json_body={"from": "+5491155554444", "text": "hola"})
        assert status == 200

        async def inbound():
            _, body = await get(http, daemon, "/api/v1/sms", direction="inbound")
            return body["data"]
        [msg] = await wait_until(inbound, what="the inbound SMS listed")
        assert msg["direction"] == "inbound" and msg["status"] == "received" and msg["content"] == "hola"
        assert isinstance(msg["id"], int) and msg["id"] % 2 == 1
        assert msg["phone_number"]["international_number"] == "+5491155554444"
        assert msg["phone_number"]["is_mobile"] is True and msg["phone_number"]["number"] == "1155554444"
        status, body = await get(http, daemon, f"/api/v1/sms/{msg['id']}")
        assert status == 200 and body["data"]["content"] == "hola"

        status, body = await get(http, daemon, "/api/v1/sms")
        assert status == 200 and body["status"] == "success"
        ids = [m["id"] for m in body["data"]]
        assert all(isinstance(i, int) for i in ids) and ids[0] == msg["id"]
        assert [m["id_sms_api"] for m in body["data"]] == [None, "id-2", "id-1", "id-0"]
        _, body = await get(http, daemon, "/api/v1/sms", direction="outbound", take="2", skip="1")
        assert [m["id_sms_api"] for m in body["data"]] == ["id-1", "id-0"]
        assert all(m["direction"] == "outbound" for m in body["data"])
        await wait_until(lambda: daemon.store.messages("user@email.com", status="delivered", take=10),
                         what="delivered")
        # Notimation's names: a delivered SMS is "sent"; the filter "sent" finds it.
        _, body = await get(http, daemon, "/api/v1/sms", headers={}, status="sent", api_key="your-access-key")
        assert body["data"] and all(m["status"] == "sent" and m["sent_at"] for m in body["data"])
        _, body = await get(http, daemon, "/api/v1/sms", status="delivered")  # our own state name (extension)
        assert body["data"] and all(m["state"] == "delivered" for m in body["data"])
        _, body = await get(http, daemon, "/api/v1/sms", status="received", direction="inbound")
        assert [m["id"] for m in body["data"]] == [msg["id"]]
        _, body = await get(http, daemon, "/api/v1/sms", status="pending")
        assert body["data"] == []

        status, body = await get(http, daemon, "/api/v1/sms/id-0")
        assert status == 200 and body["data"]["status"] == "sent"
        assert body["data"]["history"][0]["status"] == "queued"
        status, again = await get(http, daemon, f"/api/v1/sms/{body['data']['id']}")
        assert status == 200 and again["data"]["id_sms_api"] == "id-0"
        for bad in ({"take": "1001"}, {"take": "0"}, {"skip": "-1"}, {"direction": "sideways"},
                    {"status": "lost"}, {"take": "ten"}):
            status, body = await get(http, daemon, "/api/v1/sms", **bad)
            assert status == 400 and body["status"] == "error" and body["message"], bad
        for missing in ("in_999", "999999", "1000000"):
            status, body = await get(http, daemon, f"/api/v1/sms/{missing}")
            assert status == 404 and body["status"] == "error"
        status, _ = await get(http, daemon, "/api/v1/sms", headers={"Authorization": "Bearer nope"})
        assert status == 401


async def test_phone_number_lookup(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        # Seed 004's reading: ar/1155554444 is the mobile +54 9 11 5555-4444.
        status, body = await get(http, daemon, "/api/v1/phone_number/ar/1155554444")
        assert body["data"]["international_number"] == "+5491155554444" and body["data"]["is_mobile"] is True
        status, body = await get(http, daemon, "/api/v1/phone_number/ar/91155554444")
        assert status == 200 and body["status"] == "success"
        data = body["data"]
        assert data["international_number"] == "+5491155554444" and data["is_invalid"] is False
        assert data["is_mobile"] is True and data["city"] == "Buenos Aires"
        status, body = await get(http, daemon, "/api/v1/phone_number/FR/0612345678")
        data = body["data"]
        assert data["formatted_number"] == "06 12 34 56 78" and data["operator"] == "SFR"
        assert data["is_mobile"] is True and data["number"] == "612345678"
        status, body = await get(http, daemon, "/api/v1/phone_number/fr/0142685300", lang="fr")
        assert body["data"]["is_mobile"] is False and body["data"]["city"] == "Paris"
        status, body = await get(http, daemon, "/api/v1/phone_number/fr/12")
        assert status == 200 and body["data"]["is_invalid"] is True and body["data"]["invalid_reason"]
        status, body = await get(http, daemon, "/api/v1/phone_number/fr/hello")
        assert status == 200 and body["data"]["is_invalid"] is True
        status, body = await get(http, daemon, "/api/v1/phone_number/zz/0612345678")
        assert status == 400 and "country" in body["message"]
