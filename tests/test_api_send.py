"""POST /api/v1/sendsms and /api/sendSms: the seeds' requests verbatim (host
changed), every error code of seed 003, test mode, and tracked links."""

from __future__ import annotations

import dataclasses
import json
import re

import aiohttp
from api_util import serving
from conftest import api_url, make_config, wait_until


def record_events(daemon):
    """Keep the account's events in the outbox (as a webhook would get them),
    without a receiver for the deliverer to reach."""
    config = daemon.config
    accounts = tuple(dataclasses.replace(a, webhook_url="http://127.0.0.1:9/unreached", webhook_format="json")
                     if a.login == "user@email.com" else a for a in config.accounts)
    daemon.webhook_policy.reload(dataclasses.replace(config, accounts=accounts))

USER = {"login": "user@email.com", "access_key": "your-access-key"}
ARDARY_USER = {"login": "user@gmail.com", "access_key": "YOUR_ACCESS_KEY"}
DISABLED = {"login": "off@example.com", "access_key": "off-key", "enabled": False}
BEARER = {"Authorization": "Bearer your-access-key"}


def config(tmp_path, **api):
    return make_config(tmp_path, accounts=[USER, ARDARY_USER, DISABLED],
                       api={"forbidden_words": ["casino", "crédit facile"], "default_region": "FR", **api})


def radio(daemon, device="sim-1"):
    path = daemon.config.data_dir / f"virtual-{device}-radio.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def post(http, daemon, path, body: str | dict):
    data = body if isinstance(body, str) else json.dumps(body)
    async with http.post(api_url(daemon, path), data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


# Seed 000, "Quick Start" (curl -d '…'), verbatim.
QUICK_START = '''{
    "header": {
      "login": "user@email.com",
      "accessKey": "your-access-key"
    },
    "messages": [{
      "phone_number": "+33612345678",
      "message": "Hello from inSIM API!"
    }]
  }'''

# Seed 000, "Send SMS — POST /sendsms", verbatim.
SEND_TRACKED = '''{
    "header": {
      "login": "user@email.com",
      "accessKey": "your-access-key"
    },
    "messages": [
      {
        "phone_number": "+33612345678",
        "message": "Hi! Confirm your appointment here: [Lien_Tracking]",
        "url": "https://example.com/confirm",
        "priorite": 1,
        "date_to_send": "2025-10-29 10:00:00"
      }
    ]
  }'''

# Seed 000, "First API Call", verbatim: placeholders the reader is meant to fill in.
FIRST_CALL = '''{
    "header": {
      "login": "user@email.com",
      "accessKey": "YOUR_ACCESS_KEY"
    },
    "messages": [{
      "phone_number": "YOUR_NUMBER",
      "message": "inSIM API test ✅"
    }]
  }'''

# Seed 001, "Votre objet JSON SMS", verbatim.
ARDARY_001 = '''{
    "header": [
        {
            "accesskey": "YOUR_ACCESS_KEY",
            "login": "user@gmail.com",
            "sender_name": "ArdarySMS",
            "sender_mode": "1",
            "date_to_send": "2022-05-12 14:56:13",
            "priority": 1,
            "mode":"prod"
        }
    ],
    "messages": [
        {
            "id_sms_api": "09403292039020",
            "date_to_send": "2020-01-02 13:34:00",
            "phone_number": "+1XXXXXXXXXX",
            "message": "Hi Cassandra, can you confirm our appointement ? \\n If you cannot come, lease inform me or change meeting date here [Link].",
            "url": "https://www.my-link.com"
        }
    ]
}'''

# Seed 003, the first request body, verbatim (its login is left empty).
ARDARY_003 = '''{ "header": [ { "accesskey": "YOUR_ACCESS_KEY", "login": "", "sender_name": "ArdarySMS", "sender_mode": "1", "date_to_send": "2020-01-02 13:34:00", "priority": 1, "mode":"prod" } ], "messages": [ { "id_sms_api": "09403292039020", "date_to_send": "2020-01-02 13:34:00", "phonenumber": "+1XXXXXXXXXX", "message": "Hi Cassandra, can you confirm our appointement ? \\n If you cannot come, lease inform me or change meeting date here [Link].", "url": "", "addReply": 1, "addStop": 0 } ] }'''


async def test_seed_000_quick_start(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/v1/sendsms", QUICK_START)
        assert status == 200 and isinstance(body, list) and len(body) == 1
        answer = body[0]
        assert re.fullmatch(r"[A-Za-z0-9]{15}", answer["id_sms_api"])
        assert answer["sms_per_message"] == 1 and answer["sent"] == 1
        assert answer["phone_number"] == "+33612345678" and answer["user"] == "user@email.com"
        assert answer["message"] == "Hello from inSIM API!"
        await wait_until(lambda: radio(daemon), what="the virtual phone transmits")
        assert radio(daemon)[0]["text"] == "Hello from inSIM API!"


async def test_seed_000_tracked_link_redirects_and_records_the_click(tmp_path):
    async with serving(config(tmp_path)) as daemon, \
            aiohttp.ClientSession() as http:
        record_events(daemon)
        status, body = await post(http, daemon, "/api/v1/sendsms", SEND_TRACKED)
        assert status == 200 and body[0]["sent"] == 1
        text = body[0]["message"]
        found = re.fullmatch(r"Hi! Confirm your appointment here: http://127\.0\.0\.1:8080/l/([A-Za-z0-9]+)", text)
        assert found, text
        code = found.group(1)
        await wait_until(lambda: radio(daemon), what="transmission")
        assert radio(daemon)[0]["text"] == text
        async with http.get(api_url(daemon, f"/l/{code}"), allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "https://example.com/confirm"
        async with http.get(api_url(daemon, "/l/nosuchcode"), allow_redirects=False) as resp:
            assert resp.status == 404
        events = [e for e in await daemon.store.outbox("user@email.com") if e["kind"] == "link_clicked"]
        assert len(events) == 1
        payload = json.loads(events[0]["payload"])
        assert payload["id_sms_api"] == body[0]["id_sms_api"]
        assert payload["phone_number"] == "+33612345678"
        assert payload["link"] == "https://example.com/confirm"
        assert isinstance(payload["date"], float)
        async with http.get(api_url(daemon, f"/api/v1/sms/{body[0]['id_sms_api']}"), headers=BEARER) as resp:
            data = (await resp.json())["data"]
        assert data["links"][0]["clicks"] == 1 and data["links"][0]["url"] == "https://example.com/confirm"


async def test_seed_000_first_call_with_placeholders_is_refused(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/v1/sendsms", FIRST_CALL)
        assert status == 200  # the code is in the body, where the seeds' clients read it
        assert body[0]["sent"] == 0 and body[0]["error"] == ["#001"]


async def test_seed_001_ardary_form_answers_per_message_in_data(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        for path in ("/api/sendSms", "/api/v1/sendsms"):
            status, body = await post(http, daemon, path, ARDARY_001)
            assert status == 200
            assert body["count_sent"] == 0
            [answer] = body["data"]
            assert answer["id_sms_api"] == "09403292039020" and answer["error"] == ["#007"]
        # The same request with a real number goes, its [Link] tracked.
        fixed = json.loads(ARDARY_001)
        fixed["messages"][0]["phone_number"] = "+14155552671"
        status, body = await post(http, daemon, "/api/sendSms", fixed)
        assert status == 200 and "count_sent" not in body
        [answer] = body["data"]
        assert answer["id_sms_api"] == "09403292039020" and answer["sent"] == 1
        assert answer["phonenumber"] == answer["phone_number"] == "+14155552671"
        assert "/l/" in answer["message"] and "[Link]" not in answer["message"]
        assert answer["sent_time"] == "2020-01-02T12:34:00.000Z"  # Europe/Paris in the test config


async def test_seed_003_ardary_form_verbatim(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/sendSms", ARDARY_003)
        assert status == 200  # its login is empty: #001 in the body
        assert body == {"data": [body["data"][0]], "count_sent": 0}
        assert body["data"][0]["id_sms_api"] == "09403292039020" and body["data"][0]["error"] == ["#001"]
        fixed = json.loads(ARDARY_003)
        fixed["header"][0]["login"] = "user@gmail.com"
        fixed["messages"].append(dict(fixed["messages"][0], id_sms_api="109O3238932832",
                                      phonenumber="+14155552671"))
        status, body = await post(http, daemon, "/api/sendSms", fixed)
        assert status == 200 and body["count_sent"] == 1
        assert [a.get("error") for a in body["data"]] == [["#007"], None]
        # url is empty: the placeholder stays as written (seed 003's own answer shows it so)
        assert body["data"][1]["message"].endswith("change meeting date here [Link].")


async def test_test_mode_answers_and_stores_nothing(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        request = json.loads(ARDARY_001)
        request["header"][0]["mode"] = "test"
        request["messages"][0]["phone_number"] = "+14155552671"
        request["messages"].append({"phonenumber": "+33612345678", "message": ""})
        status, body = await post(http, daemon, "/api/sendSms", request)
        assert status == 200 and body["count_sent"] == 1
        assert body["data"][0]["sent"] == 1 and body["data"][0]["mode"] == "test"
        assert body["data"][1]["error"] == ["#006"]
        assert await daemon.store.counts() == {}
        assert await daemon.store.get_job("user@gmail.com", "09403292039020") is None


async def test_every_error_code_per_message_and_the_valid_ones_still_go(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        header = {"login": "user@email.com", "accessKey": "your-access-key"}
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [
            {"phone_number": "0612345678", "message": "national number, default_region FR"},
            {"phone_number": "+33612345679", "message": "Win at the CASINO tonight"},
            {"phone_number": "+33612345679", "message": "Un crédit facile !"},
            {"phone_number": "+33612345679", "message": "casinos are a different word"},
            {"phone_number": "+33612345678", "message": ""},
            {"phone_number": "+1XXXXXXXXXX", "message": "bad number"},
            {"phone_number": "+33612345678", "message": "bad priority", "priorite": "urgent"},
            {"phone_number": "+33612345678", "message": "bad url [Lien_Tracking]", "url": "javascript:alert(1)"},
            "not an object",
        ]})
        assert status == 200
        assert [a["sent"] for a in body] == [1, 0, 0, 1, 0, 0, 0, 0, 0]
        assert body[0]["phone_number"] == "+33612345678"
        assert [a.get("error") for a in body[1:]] == [["#004"], ["#004"], None, ["#006"], ["#007"], ["#009"],
                                                     ["#009"], ["#009"]]
        assert "casino" in body[1]["error_message"]
        await wait_until(lambda: len(radio(daemon)) == 2, what="the two valid messages")
        # #002: the account is disabled; #001: wrong key.
        status, body = await post(http, daemon, "/api/v1/sendsms", {
            "header": {"login": "off@example.com", "accessKey": "off-key"},
            "messages": [{"phone_number": "+33612345678", "message": "hi"}]})
        assert status == 200 and body[0]["error"] == ["#002"]


async def test_stop_opts_out_and_start_opts_back_in(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.dispatcher.sessions, what="phone online")
        header = {"login": "user@email.com", "accessKey": "your-access-key"}

        async def simulate(text):
            async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), headers=BEARER,
                                 json={"from": "+33612345678", "text": text}) as resp:
                assert resp.status == 200

        async def send():
            _, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [
                {"phone_number": "0612345678", "message": "promo"},
                {"phone_number": "+33612345679", "message": "promo"}]})
            return [a.get("error") for a in body]

        await simulate(" Arrêt ! ")
        await wait_until(lambda: daemon.store.opted_out("user@email.com", ["+33612345678"]), what="opt-out")
        assert await send() == [["#003"], None]
        # Another account's list is its own.
        assert not await daemon.store.opted_out("user@gmail.com", ["+33612345678"])
        await simulate("stop please call me")  # not a keyword: an ordinary message
        await simulate("START")
        await wait_until(lambda: _empty(daemon.store.opted_out("user@email.com", ["+33612345678"])),
                         what="opt-in")
        assert await send() == [None, None]


async def _empty(coro):
    return not await coro


async def test_limits_are_answered_clearly(tmp_path):
    async with serving(config(tmp_path, max_messages=3, max_body_bytes=2000)) as daemon, \
            aiohttp.ClientSession() as http:
        header = {"login": "user@email.com", "accessKey": "your-access-key"}
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [
            {"phone_number": "+33612345678", "message": "x"}] * 4})
        assert status == 413 and "at most 3" in body["message"]
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [
            {"phone_number": "+33612345678", "message": "x" * 3000}]})
        assert status == 413 and "2000 bytes" in body["message"]
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": {**header, "mode": "dry"},
                                                                     "messages": []})
        assert status == 400 and "mode" in body["message"]
        status, body = await post(http, daemon, "/api/v1/sendsms", '{"header": {}, "messages": [NaN]}')
        assert status == 400


async def test_an_id_sms_api_sent_again_answers_the_first_job_or_is_refused_when_the_content_differs(tmp_path):
    """The four Ardary examples all use 09403292039020: the same message again is
    the first job; another number or text under that id is refused, per message."""
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        header = {"login": "user@email.com", "accessKey": "your-access-key"}
        first = {"id_sms_api": "09403292039020", "phone_number": "+33612345678",
                 "message": "See [Lien_Tracking]", "url": "https://example.com/a"}
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [first]})
        assert status == 200 and body[0]["sent"] == 1
        sent = body[0]
        # The same message again (its tracked link would get a new code): the first job.
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [first]})
        assert status == 200 and body[0] == sent
        # Another number, another text, and a batch that reuses the id for two messages.
        status, body = await post(http, daemon, "/api/v1/sendsms", {"header": header, "messages": [
            dict(first, phone_number="+33612345679"),
            dict(first, message="Another text"),
            {"id_sms_api": "B1", "phone_number": "+33612345678", "message": "one"},
            {"id_sms_api": "B1", "phone_number": "+33612345678", "message": "two"},
        ]})
        assert status == 200
        assert [a["sent"] for a in body] == [0, 0, 1, 0]
        for refused in (body[0], body[1], body[3]):
            assert refused["error"] == ["#009"] and "already used for another message" in refused["error_message"]
        assert body[3]["message"] == "two" and body[2]["message"] == "one"
        await wait_until(lambda: len(radio(daemon)) == 2, what="two transmissions")
        assert sorted(r["text"] for r in radio(daemon)) == sorted([sent["message"], "one"])
        job = await daemon.store.get_job("user@email.com", "09403292039020")
        assert job is not None and job.phone_number == "+33612345678"
