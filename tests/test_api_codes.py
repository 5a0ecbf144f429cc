"""SMSFLOW-style verification codes: POST /api/v1/smscode, POST
/api/v1/verify_code, GET /api/v1/smscode[/{id}]."""

from __future__ import annotations

import re
import sqlite3

import aiohttp
from api_util import get, post, radio, serving
from conftest import make_config, wait_until

from bridge.store.model import VerificationCode


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
