"""End to end over real sockets: HTTP in, websocket to a virtual phone, states back."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from conftest import api_url, make_config, running, wait_until

AUTH = {"login": "user@email.com", "accessKey": "your-access-key"}
BEARER = {"Authorization": "Bearer your-access-key"}


async def sendsms(session: aiohttp.ClientSession, daemon, messages, header=AUTH):
    async with session.post(api_url(daemon, "/api/v1/sendsms"),
                            json={"header": header, "messages": messages}) as resp:
        return resp.status, await resp.json()


async def sms_status(session, daemon, id_sms_api):
    async with session.get(api_url(daemon, f"/api/v1/sms/{id_sms_api}"), headers=BEARER) as resp:
        body = await resp.json()
        return body["data"]["state"] if resp.status == 200 else None


def radio(daemon, device="sim-1"):
    path = daemon.config.data_dir / f"virtual-{device}-radio.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_sms_accepted_sent_and_delivered(tmp_path):
    async with running(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await sendsms(http, daemon, [{"phone_number": "+33612345678",
                                                     "message": "Hello from inSIM API!"}])
        assert status == 200
        assert len(body) == 1
        answer = body[0]
        assert answer["sent"] == 1 and answer["sms_per_message"] == 1
        assert answer["user"] == "user@email.com" and answer["phone_number"] == "+33612345678"
        assert answer["sent_time"].endswith("Z") and len(answer["id_sms_api"]) == 15
        await wait_until(lambda: sms_status(http, daemon, answer["id_sms_api"]),
                         what="status lookup")
        await wait_until(lambda: _is(sms_status(http, daemon, answer["id_sms_api"]), "delivered"),
                         what="delivered")
        async with http.get(api_url(daemon, f"/api/v1/sms/{answer['id_sms_api']}"), headers=BEARER) as resp:
            data = (await resp.json())["data"]
        assert [h["status"] for h in data["history"]] == ["queued", "dispatched", "sent", "delivered"]
        sent = radio(daemon)
        assert [(r["to"], r["text"], r["id_sms_api"]) for r in sent] == \
            [("+33612345678", "Hello from inSIM API!", answer["id_sms_api"])]


async def _is(coro, expected):
    return (await coro) == expected


async def test_batch_judges_each_message_and_keeps_the_valid_ones(tmp_path):
    async with running(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await sendsms(http, daemon, [
            {"phone_number": "+33612345678", "message": "ok one"},
            {"phone_number": "+33612345678", "message": "   "},
            {"phone_number": "12", "message": "bad number"},
            {"phone_number": "+33612345679", "message": "ж" * 71},
            {"phone_number": "+33612345679", "message": "x" * 161},
        ])
        assert status == 200
        assert [b["sent"] for b in body] == [1, 0, 0, 1, 1]
        assert body[1]["error"] == ["#006"]
        assert body[2]["error"] == ["#007"] and "12" in body[2]["error_message"]
        assert body[3]["sms_per_message"] == 2  # UCS-2: 70 per SMS, 67 per part
        assert body[4]["sms_per_message"] == 2  # GSM-7: 160, then 153 per part
        await wait_until(lambda: len(radio(daemon)) == 3, what="three transmissions")


async def test_bad_credentials_are_001_for_every_message(tmp_path):
    async with running(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "hi"}],
                                     header={"login": "user@email.com", "accessKey": "wrong"})
        assert status == 200  # the #001 is in the body, where inSIM clients read it
        assert body[0]["sent"] == 0 and body[0]["error"] == ["#001"]
        async with http.get(api_url(daemon, "/api/v1/sms/whatever"),
                            headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["status"] == "error"


async def test_id_sms_api_is_an_idempotency_key(tmp_path):
    async with running(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        msg = {"phone_number": "+33612345678", "message": "only once", "id_sms_api": "order-42"}
        _, first = await sendsms(http, daemon, [msg])
        _, again = await sendsms(http, daemon, [msg, dict(msg)])
        assert first[0]["id_sms_api"] == again[0]["id_sms_api"] == again[1]["id_sms_api"] == "order-42"
        assert first[0]["sent_time"] == again[0]["sent_time"]
        await wait_until(lambda: _is(sms_status(http, daemon, "order-42"), "delivered"), what="delivered")
        assert len(radio(daemon)) == 1


async def test_priority_then_date_then_arrival(tmp_path):
    # No device yet: everything queues; then one phone with a window of 1
    # takes them one at a time, in order.
    config = make_config(tmp_path, devices=[], agents={"window": 1})
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        past = "2020-01-01 10:00:00"
        _, body = await sendsms(http, daemon, [
            {"phone_number": "+33612345678", "message": "p0 first", "priorite": 0, "id_sms_api": "a"},
            {"phone_number": "+33612345678", "message": "p2 late", "priorite": 2, "id_sms_api": "b"},
            {"phone_number": "+33612345678", "message": "p1", "priorite": 1, "id_sms_api": "c"},
            {"phone_number": "+33612345678", "message": "p2 early", "priorite": 2, "id_sms_api": "d",
             "date_to_send": past},
            {"phone_number": "+33612345678", "message": "p2 late 2", "priorite": 2, "id_sms_api": "e"},
        ])
        assert all(b["sent"] for b in body)
        claimed = []
        for _ in range(5):
            jobs = await daemon.store.claim("user@email.com", "x", 1)
            claimed.append(jobs[0].id_sms_api)
        assert claimed == ["d", "b", "e", "c", "a"]


async def test_scheduled_message_waits_for_its_date(tmp_path):
    async with running(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        import datetime as dt
        from zoneinfo import ZoneInfo
        soon = dt.datetime.now(ZoneInfo("Europe/Paris")) + dt.timedelta(seconds=2)
        _, body = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "later",
                                                "date_to_send": soon.strftime("%Y-%m-%d %H:%M:%S")}])
        assert body[0]["sent"] == 1
        assert await sms_status(http, daemon, body[0]["id_sms_api"]) == "queued"
        await wait_until(lambda: _is(sms_status(http, daemon, body[0]["id_sms_api"]), "delivered"),
                         within=10, what="scheduled send")
        assert radio(daemon)[0]["at"] >= soon.timestamp() - 1.0  # the date has second precision


async def test_expired_jobs_are_expired_with_a_reason(tmp_path):
    config = make_config(tmp_path, devices=[], dispatcher={"ttl": 1})
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        _, body = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "stale"}])
        await wait_until(lambda: _is(sms_status(http, daemon, body[0]["id_sms_api"]), "expired"),
                         within=10, what="expiry")
        job = await daemon.store.get_job("user@email.com", body[0]["id_sms_api"])
        assert "ttl" in job.reason


async def test_send_rate_is_capped_per_device(tmp_path):
    config = make_config(tmp_path, devices=[{"id": "slow", "kind": "virtual", "account": "user@email.com",
                                             "latency": 0, "jitter": 0, "max_per_minute": 3}])
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": f"m{i}"} for i in range(6)])
        await wait_until(lambda: len(radio(daemon, "slow")) == 3, what="three sends")
        await asyncio.sleep(0.5)  # give the dispatcher every chance to break the cap
        assert len(radio(daemon, "slow")) == 3
        counts = await daemon.store.counts()
        assert counts.get(("queued", 1)) == 3


async def test_work_is_spread_over_the_accounts_devices(tmp_path):
    devices = [{"id": f"p{i}", "kind": "virtual", "account": "user@email.com", "latency": 0.05,
                "jitter": 0, "max_per_minute": 0} for i in range(3)]
    devices.append({"id": "other", "kind": "virtual", "account": "other@example.com", "latency": 0,
                    "max_per_minute": 0})
    accounts = [{"login": "user@email.com", "access_key": "your-access-key"},
                {"login": "other@example.com", "access_key": "other-key"}]
    config = make_config(tmp_path, devices=devices, accounts=accounts)
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: len(daemon.dispatcher.sessions) == 4, what="four devices online")
        await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": f"m{i}"} for i in range(60)])
        await wait_until(lambda: sum(len(radio(daemon, f"p{i}")) for i in range(3)) == 60, what="60 sends")
        per_device = [len(radio(daemon, f"p{i}")) for i in range(3)]
        assert all(n > 0 for n in per_device), per_device
        assert radio(daemon, "other") == []  # another account's phone never sends our SMS


async def test_simulated_incoming_sms_and_calls_are_stored(tmp_path):
    async with running(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.dispatcher.sessions, what="phone online")
        for path, body in (("incoming-sms", {"from": "+33612345678", "text": "Hi, I confirm"}),
                           ("call", {"from": "+33612345678", "missed": True}),
                           ("call", {"from": "+33698765432", "duration": 323})):
            async with http.post(api_url(daemon, f"/api/v1/simulate/{path}"), json=body, headers=BEARER) as r:
                assert r.status == 200, await r.text()
        inbound = await wait_until(lambda: daemon.store.inbound("user@email.com"), what="inbound SMS")
        assert inbound[0]["sender"] == "+33612345678" and inbound[0]["text"] == "Hi, I confirm"
        calls = await wait_until(lambda: _len(daemon.store.calls("user@email.com"), 2), what="calls")
        assert sorted((c["direction"], c["duration_s"]) for c in calls) == [("incoming", 323.0), ("missed", 0.0)]


async def _len(coro, n):
    rows = await coro
    return rows if len(rows) == n else None


async def test_bad_request_bodies_get_clear_4xx(tmp_path):
    async with running(make_config(tmp_path, api={"max_messages": 5})) as daemon, \
            aiohttp.ClientSession() as http:
        async with http.post(api_url(daemon, "/api/v1/sendsms"), data=b"{not json") as resp:
            assert resp.status == 400
            assert "JSON" in (await resp.json())["message"]
        async with http.post(api_url(daemon, "/api/v1/sendsms"), json=[1, 2]) as resp:
            assert resp.status == 400
        status, body = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "x"}] * 6)
        assert status == 413 and "at most 5" in body["message"]
        status, body = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "x",
                                                     "priorite": 7, "date_to_send": "tomorrow"}])
        assert body[0]["sent"] == 0 and body[0]["error"] == ["#009"]
        assert "priorite" in body[0]["error_message"] and "date_to_send" in body[0]["error_message"]


async def test_failures_are_reported_as_failed(tmp_path):
    config = make_config(tmp_path, devices=[{"id": "sim-1", "kind": "virtual", "account": "user@email.com",
                                             "latency": 0, "fail_prefixes": ["+33699"]}])
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        _, body = await sendsms(http, daemon, [{"phone_number": "+33699000000", "message": "doomed"}])
        await wait_until(lambda: _is(sms_status(http, daemon, body[0]["id_sms_api"]), "failed"),
                         what="failed")
        job = await daemon.store.get_job("user@email.com", body[0]["id_sms_api"])
        assert "simulated" in job.reason
        assert radio(daemon) == []
