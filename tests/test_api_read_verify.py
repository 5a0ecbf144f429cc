"""The Notimation-style read side (GET /sms, /sms/{id}, /phone_number) and
SMSFLOW-style verification codes."""

from __future__ import annotations

import json
import re
import sqlite3

import aiohttp
from api_util import serving
from conftest import api_url, make_config, wait_until

from bridge.store.model import VerificationCode

BEARER = {"Authorization": "Bearer your-access-key"}
HEADER = {"login": "user@email.com", "accessKey": "your-access-key"}


def radio(daemon, device="sim-1"):
    path = daemon.config.data_dir / f"virtual-{device}-radio.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def get(http, daemon, path, headers=BEARER, **params):
    async with http.get(api_url(daemon, path), headers=headers, params=params) as resp:
        return resp.status, await resp.json()


async def post(http, daemon, path, *, json_body=None, form=None, headers=BEARER):
    async with http.post(api_url(daemon, path), json=json_body, data=form, headers=headers) as resp:
        return resp.status, await resp.json()


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


async def test_verification_code_send_check_and_status(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        # SMSFLOW's clients post forms with "Authorization: Token …"
        status, body = await post(http, daemon, "/api/v1/smscode", form={"phone_number": "+33612345678"},
                                  headers={"Authorization": "Token your-access-key"})
        assert status == 200, body
        record = body["data"]
        assert record["status"] == "pending" and record["tries_left"] == 5 and "code" not in record
        await wait_until(lambda: radio(daemon), what="the code is sent")
        code = re.search(r"\d{6}", radio(daemon)[0]["text"]).group(0)
        # stored hashed: the code is nowhere in the database's code table
        db = sqlite3.connect(daemon.config.store.path)
        row = db.execute("SELECT salt, digest FROM verification_codes").fetchone()
        db.close()
        assert code.encode() not in row[0] + row[1] and len(row[1]) == 32
        wrong = "000000" if code != "000000" else "111111"
        status, body = await post(http, daemon, "/api/v1/verify_code",
                                  json_body={"phone_number": "+33612345678", "code": wrong})
        assert status == 422 and body["tries_left"] == 4
        status, body = await post(http, daemon, "/api/v1/verify_code",
                                  form={"phone_number": "0033612345678", "code": code})
        assert status == 200 and body["data"]["status"] == "verified"
        # used: a second check fails
        status, body = await post(http, daemon, "/api/v1/verify_code",
                                  json_body={"phone_number": "+33612345678", "code": code})
        assert status == 410
        status, body = await get(http, daemon, f"/api/v1/smscode/{record['id']}")
        assert body["data"]["status"] == "verified" and body["data"]["attempts"] == 2
        assert body["data"]["sms_status"] in ("sent", "delivered", "dispatched")
        status, body = await get(http, daemon, "/api/v1/smscode", id=str(record["id"]))
        assert [r["id"] for r in body["data"]] == [record["id"]]
        status, body = await get(http, daemon, "/api/v1/smscode/999")
        assert status == 404


async def test_five_wrong_tries_kill_the_code(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/v1/smscode", json_body={
            "phone_number": "+33612345678", "timeout": 60, "length": 4, "message": "Code: {code}"})
        assert status == 200
        await wait_until(lambda: radio(daemon), what="the code is sent")
        code = radio(daemon)[0]["text"].removeprefix("Code: ")
        assert re.fullmatch(r"\d{4}", code)
        wrong = "0000" if code != "0000" else "1111"
        lefts = []
        for _ in range(5):
            status, body = await post(http, daemon, "/api/v1/verify_code",
                                      json_body={"phone_number": "+33612345678", "code": wrong})
            assert status == 422
            lefts.append(body["tries_left"])
        assert lefts == [4, 3, 2, 1, 0]
        status, body = await post(http, daemon, "/api/v1/verify_code",
                                  json_body={"phone_number": "+33612345678", "code": code})
        assert status == 410  # dead, even with the right code
        _, body = await get(http, daemon, "/api/v1/smscode")
        assert body["data"][0]["status"] == "dead" and body["data"][0]["tries_left"] == 0
        for bad in ({"phone_number": "+33612345678", "timeout": 5}, {"phone_number": "12"},
                    {"phone_number": "+33612345678", "message": "no placeholder"}):
            status, body = await post(http, daemon, "/api/v1/smscode", json_body=bad)
            assert status == 400 and body["status"] == "error", bad


def test_code_status_is_derived_from_time_and_tries():
    code = VerificationCode(1, "a", "+33612345678", b"s", b"d", 100.0, 200.0, 0, 5, "pending", None, None, None)
    assert code.status(150.0) == "pending" and code.status(200.0) == "expired"
    dead = VerificationCode(1, "a", "+33612345678", b"s", b"d", 100.0, 200.0, 5, 5, "pending", None, None, None)
    assert dead.status(150.0) == "dead"
