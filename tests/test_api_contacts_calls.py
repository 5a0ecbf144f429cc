"""Contacts (seeds 000/001/003), click-to-call and call qualifications."""

from __future__ import annotations

import dataclasses
import json

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
GMAIL = {"login": "user@gmail.com", "access_key": "YOUR_PASSWORD"}
BEARER = {"Authorization": "Bearer your-access-key"}


def config(tmp_path, **kw):
    return make_config(tmp_path, accounts=[USER, GMAIL], **kw)


async def post(http, daemon, path, body, headers=None):
    data = body if isinstance(body, str) else json.dumps(body)
    async with http.post(api_url(daemon, path), data=data,
                         headers={"Content-Type": "application/json", **(headers or {})}) as resp:
        return resp.status, await resp.json()


# Seed 000, "Add Contacts", verbatim.
CONTACT_000 = '''{
    "header": {
      "login": "user@email.com",
      "accessKey": "your-access-key"
    },
    "contacts": [
      {
        "firstname": "John",
        "lastname": "Doe",
        "phone_number": "+33612345678",
        "email": "john.doe@example.com",
        "adress": "123 Main Street"
      }
    ]
  }'''

# Seed 000, "Click-to-Call", verbatim.
CALL_000 = '''{
    "header": {
      "login": "user@email.com",
      "accessKey": "your-access-key",
      "type": "clicToCall",
      "phone_number": "+33612345678"
    }
  }'''

# Seed 001's contact example, with its typographic quotes straightened (as
# printed it is not JSON) and its placeholders filled in.
CONTACT_001 = {
    "header": [{"login": "user@gmail.com", "password": "YOUR_PASSWORD", "api": True}],
    "contacts": [
        {"phone_number": "+14155552671", "first_name": "Doe", "last_name": "Joe", "adress": "contact adress",
         "email": "contact_email@gmail.com", "country_code": "+1"},
        {"phone_number": "+14155552672", "first_name": "Smith", "last_name": "John",
         "adress": "contact adress", "email": "contact_email@gmail.com"},
    ]}

# Seed 003's contact example (phonenumber/firstname spellings), likewise.
CONTACT_003 = {
    "header": [{"accesskey": "YOUR_PASSWORD", "login": "user@gmail.com"}],
    "contacts": [
        {"phonenumber": "+14155552671", "firstname": "Doe", "lastname": "Joe", "adress": "contact adress",
         "email": ""},
        {"phonenumber": "+1XXXXXXXXXX", "firstname": "XXXXX", "lastname": "XXXXXXX", "adress": "",
         "email": ""},
    ]}


async def test_seed_000_contact(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/v1/contact", CONTACT_000)
        assert status == 200
        [answer] = body["data"]["contact"]
        assert {k: answer[k] for k in ("firstname", "lastname", "phonenumber", "result")} == {
            "firstname": "John", "lastname": "Doe", "phonenumber": "+33612345678", "result": "success"}
        [contact] = await daemon.store.contacts("user@email.com")
        assert (contact.firstname, contact.address, contact.email) == ("John", "123 Main Street",
                                                                      "john.doe@example.com")


async def test_seed_001_and_003_contacts_upsert_by_number(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/contact", CONTACT_001)
        assert status == 200
        first, second = body["data"]["contact"]
        assert first["phone_number"] == "+14155552671" and first["first_name"] == "Doe"
        assert first["result"] == second["result"] == "success" and first["created"] is True
        status, body = await post(http, daemon, "/api/v1/contact", CONTACT_003)
        updated, bad = body["data"]["contact"]
        assert updated["result"] == "success" and updated["created"] is False
        assert bad == {**bad, "result": "failed", "errors": ["#001"], "phonenumber": "+1XXXXXXXXXX"}
        contacts = {c.phone_number: c for c in await daemon.store.contacts("user@gmail.com")}
        assert len(contacts) == 2
        # the update kept the e-mail the second request left empty
        assert contacts["+14155552671"].email == "contact_email@gmail.com"
        assert contacts["+14155552671"].firstname == "Doe"


async def test_contact_error_codes(tmp_path):
    async with serving(config(tmp_path, api={"default_region": "FR"})) as daemon, \
            aiohttp.ClientSession() as http:
        header = {"login": "user@email.com", "accessKey": "your-access-key"}
        status, body = await post(http, daemon, "/api/v1/contact", {"header": header, "contacts": [
            {"firstname": "A", "phone_number": "12"},
            {"firstname": "B", "phone_number": ""},
            {"firstname": "C"},
            {"firstname": "D", "phone_number": "06 12 34 56 78", "email": "not-an-email"},
            {"firstname": "E", "phonenumber": "612345679", "countryCode": "FR"},
        ]})
        assert status == 200
        answers = body["data"]["contact"]
        assert [a.get("errors") for a in answers] == [["#001"], ["#002"], ["#003"], ["#004"], None]
        assert [a["result"] for a in answers] == ["failed", "failed", "failed", "success", "success"]
        numbers = sorted(c.phone_number for c in await daemon.store.contacts("user@email.com"))
        assert numbers == ["+33612345678", "+33612345679"]
        status, body = await post(http, daemon, "/api/v1/contact", {"header": {**header, "accessKey": "x"},
                                                                    "contacts": []})
        assert status == 200 and body["error"] == ["#001"]  # read by PHP's file_get_contents


async def test_seed_000_click_to_call_dials_on_the_phone(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.dispatcher.sessions, what="phone online")
        status, body = await post(http, daemon, "/api/v1/clicTocall", CALL_000)
        assert status == 200
        assert body == [{"info": "please make sure the phone is connected and inSIM is running",
                         "result": "success", "errors": [], "id_sms_api": body[0]["id_sms_api"]}]
        log = daemon.config.data_dir / "virtual-sim-1-radio.jsonl"
        await wait_until(lambda: log.exists() and '"dial"' in log.read_text(), what="the phone dials")
        [dial] = [json.loads(line) for line in log.read_text().splitlines()]
        assert dial["kind"] == "dial" and dial["to"] == "+33612345678"


async def test_click_to_call_without_a_connected_phone_is_002(tmp_path):
    async with serving(config(tmp_path, devices=[])) as daemon, aiohttp.ClientSession() as http:
        status, body = await post(http, daemon, "/api/v1/clicTocall", CALL_000)
        assert status == 200 and body[0]["result"] == "failed" and body[0]["errors"] == ["#002"]
        assert await daemon.store.counts() == {}
        bad = json.loads(CALL_000)
        bad["header"]["phone_number"] = "nope"
        status, body = await post(http, daemon, "/api/v1/clicTocall", bad)
        assert status == 400 and body[0]["errors"] == ["#007"]


async def test_qualification_from_the_interface_raises_an_event(tmp_path):
    async with serving(config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        record_events(daemon)
        status, body = await post(http, daemon, "/api/v1/qualification",
                                  {"phone_number": "+33612345678",
                                   "qualification": "Interested customer - callback next week"}, BEARER)
        assert status == 200 and body["status"] == "success"
        assert body["data"]["title"] == "call_qualification_from_interface"
        # the inSIM header works too
        status, body = await post(http, daemon, "/api/v1/qualification", {
            "header": {"login": "user@email.com", "accessKey": "your-access-key"},
            "phone_number": "+33612345679", "qualification": "second"})
        assert status == 200
        events = [json.loads(e["payload"]) for e in await daemon.store.outbox("user@email.com")
                  if e["kind"] == "call_qualification"]
        assert [(e["from"], e["qualification"], e["source"]) for e in events] == [
            ("+33612345678", "Interested customer - callback next week", "interface"),
            ("+33612345679", "second", "interface")]
        status, body = await post(http, daemon, "/api/v1/qualification",
                                  {"phone_number": "+33612345678", "qualification": " "}, BEARER)
        assert status == 400 and body["status"] == "error"
        status, _ = await post(http, daemon, "/api/v1/qualification",
                               {"phone_number": "+33612345678", "qualification": "x"})
        assert status == 401
