"""SMSFLOW's paths (seed 002) beyond its examples: tokens (24 h, hashed at
rest, revocable), JSON bodies, planned_date, refusals in its shape, balance."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import aiohttp
from api_util import serving
from conftest import api_url, make_config

from bridge.api.smsflow import balance

ACCOUNT = {"login": "company@example.com", "access_key": "key-1", "smsflow_username": "alice",
           "smsflow_password": "s3cret"}
DEVICE = {"id": "sim-1", "kind": "virtual", "account": "company@example.com", "latency": 0.0, "jitter": 0.0,
          "delivery_delay": 0.0, "max_per_minute": 10}


def config(tmp_path):
    return make_config(tmp_path, accounts=[ACCOUNT], devices=[DEVICE], api={"default_region": "FR"})


async def call(http, daemon, method, path, token=None, **kwargs):
    headers = {"Authorization": f"Token {token}"} if token else {}
    async with http.request(method, api_url(daemon, path), headers=headers, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_tokens_are_hashed_expire_and_can_be_revoked(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await call(http, daemon, "POST", "/auth2/get_token_auth/",
                                  data={"username": "alice", "password": "wrong"})
        assert status == 401 and body["code"] == 401 and body["message"]
        status, body = await call(http, daemon, "POST", "/auth2/get_token_auth",
                                  json={"username": "alice", "password": "s3cret"})
        assert status == 200 and body["company_name"] == "company@example.com"
        token = body["token"]
        status, _ = await call(http, daemon, "GET", "/apiv2/balance", token)
        assert status == 200
        # At rest: only its SHA-256, with an expiry 24 h ahead.
        with sqlite3.connect(daemon.config.store.path) as db:
            rows = db.execute("SELECT digest, expires, created FROM api_tokens").fetchall()
        assert [r[0] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        assert abs(rows[0][1] - rows[0][2] - 86400) < 1
        assert token not in (daemon.config.store.path.read_bytes().decode("latin-1"))
        # Expired: refused.
        await daemon.store.add_api_token(hashlib.sha256(b"old").hexdigest(), "company@example.com", "alice",
                                         time.time() - 1)
        status, body = await call(http, daemon, "GET", "/apiv2/balance", "old")
        assert status == 401 and body["code"] == 401
        # Revoked: refused.
        status, body = await call(http, daemon, "POST", "/auth2/revoke_token/", token)
        assert status == 200 and body["revoked"] == 1
        status, _ = await call(http, daemon, "GET", "/apiv2/balance", token)
        assert status == 401


async def test_send_as_json_with_planned_date_and_refusals(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        _, body = await call(http, daemon, "POST", "/auth2/get_token_auth/",
                             data={"username": "alice", "password": "s3cret"})
        token = body["token"]
        later = int(time.time()) + 3600
        status, sent = await call(http, daemon, "POST", "/apiv2/sms/", token,
                                  json={"number": "0612345678", "message": "plus tard", "planned_date": later,
                                        "sender_id": "7", "campagn_id": "12"})
        assert status == 200 and sent["planned_date"] == str(later)
        status, info = await call(http, daemon, "GET", f"/apiv2/sms/?id={sent['sms_id']}", token)
        assert info["data"][0]["status_name"] == "Reçu" and info["data"][0]["planned_date"]
        job = await daemon.store.get_job_by_id("company@example.com", int(sent["sms_id"][3:]))
        assert job is not None and job.due == later and job.state == "queued"
        status, body = await call(http, daemon, "POST", "/apiv2/sms/", token,
                                  data={"number": "12", "message": "x"})
        assert status == 400 and body["code"] == 400 and body["message"]
        status, body = await call(http, daemon, "POST", "/apiv2/sms/", token,
                                  data={"number": "0612345678", "message": "x", "planned_date": "demain"})
        assert status == 400 and "planned_date" in body["message"]
        status, body = await call(http, daemon, "GET", "/apiv2/sms/?id=SMS9999999", token)
        assert status == 404 and body["code"] == 404
        status, body = await call(http, daemon, "GET", "/apiv2/sms/")
        assert status == 401
        # The last 1,000 (here: the one).
        status, body = await call(http, daemon, "GET", "/apiv2/sms/", token)
        assert [r["sms_id"] for r in body["data"]] == [sent["sms_id"]]
        # A wrong code: its shape, with tries left.
        status, code = await call(http, daemon, "POST", "/apiv2/smscode/", token, data={"phone_number": "0612345678"})
        wrong = "000000" if code["code"] != "000000" else "111111"
        status, body = await call(http, daemon, "POST", "/apiv2/verify_code/", token,
                                  data={"phone_number": "0612345678", "code": wrong})
        assert status == 400 and body["code"] == 400 and body["tries_left"] == 4


def test_balance_is_what_the_devices_rates_allow_until_midnight(tmp_path):
    cfg = config(tmp_path)
    # 23:00 in Europe/Paris (the test config's zone): 60 minutes left at 10 a minute.
    import datetime as dt
    from zoneinfo import ZoneInfo
    at = dt.datetime(2026, 3, 2, 23, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    assert balance(cfg, "company@example.com", at) == 600
    assert balance(cfg, "nobody@example.com", at) is None
    unlimited = make_config(tmp_path, accounts=[ACCOUNT], devices=[dict(DEVICE, max_per_minute=0)])
    assert balance(unlimited, "company@example.com", at) is None
    # A daily cap bounds it too, less what the device sent since midnight.
    daily = make_config(tmp_path, accounts=[ACCOUNT], devices=[dict(DEVICE, max_per_day=250)])
    device_id = daily.devices[0].id
    assert balance(daily, "company@example.com", at, {device_id: 100}) == 150
    assert balance(daily, "company@example.com", at, {device_id: 300}) == 0
    hourly = make_config(tmp_path, accounts=[ACCOUNT], devices=[dict(DEVICE, max_per_hour=120)])
    assert balance(hourly, "company@example.com", at) == 120  # one hour left at 120 an hour (< 600)
