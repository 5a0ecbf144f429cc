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
            _, body = await get(http, daemon, "/api/v1/sms", direction="in")
            return body["data"]
        [msg] = await wait_until(inbound, what="the inbound SMS listed")
        assert msg["direction"] == "inbound" and msg["status"] == "received" and msg["content"] == "hola"
        assert msg["phone_number_info"]["international_number"] == "+5491155554444"
        assert msg["phone_number_info"]["is_mobile"] is True
        status, body = await get(http, daemon, f"/api/v1/sms/{msg['id']}")
        assert status == 200 and body["data"]["content"] == "hola"

        status, body = await get(http, daemon, "/api/v1/sms")
        assert status == 200 and body["status"] == "success"
        assert [m["id"] for m in body["data"]] == [msg["id"], "id-2", "id-1", "id-0"]
        _, body = await get(http, daemon, "/api/v1/sms", direction="outbound", take="2", skip="1")
        assert [m["id"] for m in body["data"]] == ["id-1", "id-0"]
        assert all(m["direction"] == "outbound" for m in body["data"])
        await wait_until(lambda: daemon.store.messages("user@email.com", status="delivered", take=10),
                         what="delivered")
        _, body = await get(http, daemon, "/api/v1/sms", headers={}, status="delivered",
                            api_key="your-access-key")
        assert body["data"] and all(m["status"] == "delivered" and m["sent_at"] for m in body["data"])
        _, body = await get(http, daemon, "/api/v1/sms", status="received")
        assert [m["id"] for m in body["data"]] == [msg["id"]]

        status, body = await get(http, daemon, "/api/v1/sms/id-0")
        assert status == 200 and body["data"]["status"] in ("sent", "delivered")
        assert body["data"]["history"][0]["status"] == "queued"
        for bad in ({"take": "1001"}, {"take": "0"}, {"skip": "-1"}, {"direction": "sideways"},
                    {"status": "lost"}, {"take": "ten"}):
            status, body = await get(http, daemon, "/api/v1/sms", **bad)
            assert status == 400 and body["status"] == "error" and body["message"], bad
        status, body = await get(http, daemon, "/api/v1/sms/in_999")
        assert status == 404 and body["status"] == "error"
        status, _ = await get(http, daemon, "/api/v1/sms", headers={"Authorization": "Bearer nope"})
        assert status == 401


async def test_phone_number_lookup(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
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
