"""Webhook forms and signatures, pure: seed 000's inSIM fields field for field,
the URL encoding every seed receiver reads back, the signed JSON form, and URLs
made sendable (non-ASCII percent-encoded, IDNA host)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import pytest

from bridge.config import AccountConfig
from bridge.webhooks import forms as wf
from bridge.webhooks import outbox as st
from bridge.webhooks import signing
from bridge.webhooks.outbox import OutboxRow
from device_agents.common import iso_utc

PARIS = ZoneInfo("Europe/Paris")
LOGIN = "user@email.com"
# 2025-01-15 14:30:00 in Paris (UTC+1 in winter) = 13:30:00Z
T = 1736947800.0
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def body(kind: str, **event):
    event.setdefault("event_id", "evt_7")
    event.setdefault("at", T)
    return wf.insim_body(kind, event, login=LOGIN, zone=PARIS)

# ----------------------------------------------------------------------------
# inSIM form, against seed 000's examples


def test_incoming_sms_fields():
    param, b = body(st.SMS_RECEIVED, **{"from": "+33612345678", "message": "Hi, I confirm my appointment",
                                        "date": T})
    assert param == "message"
    assert b == {"device_identification": LOGIN, "title": "incoming_sms", "from": "+33612345678",
                 "message": "Hi, I confirm my appointment", "date": "2025-01-15T13:30:00.000Z",
                 "event_id": "evt_7"}


@pytest.mark.parametrize("kind,title,duration", [
    (st.CALL_INCOMING, "incoming_call", "00:05:23"),
    (st.CALL_OUTGOING, "outgoing_call", "00:05:23"),
    (st.CALL_MISSED, "missed_call", "0"),
])
def test_call_fields(kind, title, duration):
    param, b = body(kind, phone_number="+33612345678", call_time=T, duration_s=0.0 if kind == st.CALL_MISSED
                    else 323.4, direction=kind[5:])
    assert param == "calls"
    assert b == {"device_identification": LOGIN, "title": title, "phone_number": "+33612345678",
                 "call_time": "2025-01-15 14:30:00", "duration": duration, "event_id": "evt_7"}


@pytest.mark.parametrize("kind,word", [(st.SMS_SENT, "sent"), (st.SMS_DELIVERED, "received")])
def test_status_fields(kind, word):
    param, b = body(kind, id_sms_api="FI5O7apqaaqcUmQ", phone_number="+33612345678", state="x",
                    device_id="sim-1", parts=1)
    assert param == "status"
    assert b == {"user": LOGIN, "phone_number": "+33612345678", "status": word,
                 "date_status": "2025-01-15T13:30:00.000Z", "id_sms_api": "FI5O7apqaaqcUmQ", "event_id": "evt_7"}


def test_failed_status_carries_error():
    _, b = body(st.SMS_FAILED, id_sms_api="FI5O7apqaaqcUmQ", phone_number="+33612345678", state="failed",
                reason="network refused (CMS 38)")
    assert b["status"] == "failed" and b["error"] == "network refused (CMS 38)"
    _, b = body(st.SMS_FAILED, id_sms_api="x", phone_number="+33612345678", state="expired")
    assert b["error"] == "expired"


def test_click_fields():
    param, b = body(st.LINK_CLICKED, id_sms_api="FI5O7apqaaqcUmQ", phone_number="+33612345678",
                    link="https://example.com/confirm", date=T + 300)
    assert param == "clics"
    assert b == {"id_sms_api": "FI5O7apqaaqcUmQ", "clicked_link": "clicked_link", "phone_number": "+33612345678",
                 "link": "https://example.com/confirm", "date": "2025-01-15 14:35:00", "event_id": "evt_7"}
    _, b = body(st.LINK_CLICKED, id_sms_api="x", phone_number="+1", url="https://e.org")
    assert b["link"] == "https://e.org" and b["date"] == "2025-01-15 14:30:00"


@pytest.mark.parametrize("source,title", [("mobile", "call_qualification_from_mobile"),
                                          ("interface", "call_qualification_from_interface")])
def test_qualification_fields(source, title):
    param, b = body(st.CALL_QUALIFICATION, **{"from": "+33612345678", "date": T + 600, "source": source,
                                              "qualification": "Interested customer - callback next week"})
    assert param == "qualification"
    assert b == {"device_identification": LOGIN, "title": title, "from": "+33612345678",
                 "date": "2025-01-15 14:40:00", "qualification": "Interested customer - callback next week",
                 "event_id": "evt_7"}


def test_kinds_without_insim_form_are_refused():
    for kind in (st.SMS_QUEUED, st.SMS_DISPATCHED, "something_new"):
        with pytest.raises(wf.Unrenderable):
            body(kind)


def test_time_helpers():
    assert iso_utc(T) == "2025-01-15T13:30:00.000Z"
    assert iso_utc(T + 0.9996) == "2025-01-15T13:30:01.000Z"
    assert iso_utc(T + 0.25) == "2025-01-15T13:30:00.250Z"
    assert wf.local_time(T, ZoneInfo("UTC")) == "2025-01-15 13:30:00"
    assert wf.local_time(1752586200.0, PARIS) == "2025-07-15 15:30:00"  # summer time
    assert [wf.hms(s) for s in (0, 59.6, 323, 3600, 86399, 360000)] == \
        ["00:00:00", "00:01:00", "00:05:23", "01:00:00", "23:59:59", "100:00:00"]


def test_encoding_is_encode_uri_component():
    # encodeURIComponent('{"a":"é +&=%#/?"}') in a browser:
    assert wf.encode_component('{"a":"é +&=%#/?"}') == "%7B%22a%22%3A%22%C3%A9%20%2B%26%3D%25%23%2F%3F%22%7D"
    assert wf.encode_component("-_.!~*'()") == "-_.!~*'()"


def test_the_fast_encoder_gives_the_reference_encoding_byte_for_byte():
    # The compiled encoder (yarl's, when it passes its check) against the plain one
    # (str.translate / urllib's quote): every code point, and random texts.
    assert wf._COMPILED_COMPONENT is not None  # yarl's compiled quoter is in use here
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    assert [wf.encode_component(c) for c in points] == [wf._reference_component(c) for c in points]
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(points[:300] + points[0x2000:0x2100] + ["😀", "%", "\\u0025"])
                       for _ in range(rng.randrange(40)))
        assert wf.encode_component(text) == wf._reference_component(text), text
    for lone in ("\ud800", "a\udcffb"):  # no UTF-8 for a lone surrogate: refused, not dropped
        with pytest.raises(UnicodeEncodeError):
            wf.encode_component(lone)


def test_url_is_read_back_by_every_seed_receiver():
    b = {"from": "+33612345678", "message": "Café & co: 100% ✅ a+b=c?"}
    for base, sep in (("http://h/webhook", "?"), ("http://h/webhook?token=x", "&")):
        url = wf.insim_url(base, "message", b)
        assert url.startswith(base + sep + "message=")
        args = parse_qs(urlsplit(url).query)
        assert json.loads(args["message"][0]) == b  # PHP
        if "%" not in b["message"]:
            assert json.loads(unquote(args["message"][0])) == b  # Flask / Node


def test_flask_and_node_receivers_read_plain_text_back():
    b = {"from": "+33612345678", "message": "Hi, I confirm — à 14h30 ✅ & merci"}
    args = parse_qs(urlsplit(wf.insim_url("http://h/webhook", "message", b)).query)
    assert json.loads(unquote(args["message"][0])) == b


# ----------------------------------------------------------------------------
# JSON form and signatures


def row(kind: str, payload: dict, *, id_: int = 7, account: str = LOGIN) -> OutboxRow:
    payload = dict(payload, event_id=f"evt_{id_}", kind=kind, account=account, at=T)
    return OutboxRow(id_, account, kind, "k", json.dumps(payload), T, 0)


def test_json_request_is_signed():
    account = AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hook", webhook_format="json",
                            webhook_secret="shh")
    r = wf.build_request(row(st.SMS_QUEUED, {"id_sms_api": "abc", "phone_number": "+33612345678",
                                             "state": "queued", "device_id": None, "parts": 1}),
                         account, PARIS, now=T + 5)
    assert r.method == "POST" and r.url == "http://h/hook"
    assert r.headers[signing.TIMESTAMP_HEADER] == str(int(T + 5))
    expected = hmac.new(b"shh", f"{int(T + 5)}.".encode() + r.body, hashlib.sha256).hexdigest()
    assert r.headers[signing.SIGNATURE_HEADER] == "sha256=" + expected
    assert signing.verify("shh", r.headers[signing.TIMESTAMP_HEADER], r.body, r.headers[signing.SIGNATURE_HEADER], now=T + 10)
    assert not signing.verify("shh", r.headers[signing.TIMESTAMP_HEADER], r.body, r.headers[signing.SIGNATURE_HEADER],
                         now=T + 3600)  # too old: a replay
    assert not signing.verify("shh", "nonsense", r.body, r.headers[signing.SIGNATURE_HEADER])
    event = json.loads(r.body)
    assert event == {"event_id": "evt_7", "event": "sms_queued", "account": LOGIN,
                     "created_at": "2025-01-15T13:30:00.000Z", "id_sms_api": "abc",
                     "data": {"id_sms_api": "abc", "phone_number": "+33612345678", "state": "queued",
                              "device_id": None, "parts": 1}}


def test_json_form_times_are_iso():
    event = wf.json_body(st.CALL_INCOMING, {"event_id": "evt_1", "account": LOGIN, "at": T, "phone_number": "+1",
                                            "call_time": T - 60, "duration_s": 60.0, "direction": "incoming"})
    assert event["data"]["call_time"] == "2025-01-15T13:29:00.000Z" and event["data"]["duration_s"] == 60.0


def test_insim_request_is_a_get():
    account = AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hook")
    r = wf.build_request(row(st.SMS_SENT, {"id_sms_api": "abc", "phone_number": "+33612345678"}), account, PARIS)
    assert r.method == "GET" and r.body is None
    args = parse_qs(urlsplit(r.url).query)
    assert json.loads(args["status"][0])["status"] == "sent"
    with pytest.raises(wf.Unrenderable):
        wf.build_request(row(st.SMS_QUEUED, {}), account, PARIS)




# ----------------------------------------------------------------------------
# URLs as they go on the wire


@pytest.mark.parametrize("given,sent", [
    ("http://127.0.0.1:8080/webhook", "http://127.0.0.1:8080/webhook"),
    ("http://127.0.0.1:8080/hoök?x=é", "http://127.0.0.1:8080/ho%C3%B6k?x=%C3%A9"),
    ("https://bücher.example/cb", "https://xn--bcher-kva.example/cb"),
    ("http://user:p%40ss@crm.example/hook?token=a%26b", "http://user:p%40ss@crm.example/hook?token=a%26b"),
])
def test_sendable_url_is_ascii_and_keeps_its_meaning(given, sent):
    assert wf.sendable_url(given) == sent
    assert wf.sendable_url(given).isascii()


def test_insim_request_to_a_non_latin1_url_is_percent_encoded():
    account = AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hoök?x=é")
    r = wf.build_request(row(st.SMS_SENT, {"id_sms_api": "abc", "phone_number": "+33612345678"}), account, PARIS,
                         now=T)
    assert r.url.isascii() and r.url.startswith("http://h/ho%C3%B6k?x=%C3%A9&status=")
    args = parse_qs(urlsplit(r.url).query)
    assert args["x"] == ["é"] and json.loads(args["status"][0])["id_sms_api"] == "abc"


def test_every_configured_form_has_a_formatter():
    from bridge.config import WEBHOOK_FORMATS
    assert set(WEBHOOK_FORMATS) <= set(wf.FORMATTERS)


# ----------------------------------------------------------------------------
# GET URLs that would exceed what servers take in a request line

# 23 parts of UCS-2 (67 characters each): 3 UTF-8 bytes a character, 9 once percent-encoded.
LONG_SMS = ("你好，明天上午十点见 & 100% 确定 + 谢谢。\n" * 60)[:1541]


@pytest.mark.parametrize("form", ["insim", "ardary"])
def test_a_long_text_is_cut_to_fit_the_url_limit_and_marked(form):
    account = AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hook", webhook_format=form,
                            webhook_max_url=8000)
    event = row(st.SMS_RECEIVED, {"from": "+33612345678", "message": LONG_SMS, "date": T})
    whole = wf.build_request(event, AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hook",
                                                  webhook_format=form), PARIS)
    assert len(whole.url) > 8190  # over nginx's, Apache's and aiohttp's default request line
    r = wf.build_request(event, account, PARIS)
    assert 7900 < len(r.url) <= 8000  # cut as little as the limit asks
    sms = json.loads(unquote(unquote(parse_qs(urlsplit(r.url).query)["message"][0])))
    assert sms["truncated"] is True and sms["message"].endswith(wf.CUT_MARK)
    assert LONG_SMS.startswith(sms["message"][:-1]) and len(sms["message"]) < len(LONG_SMS)
    if form == "ardary":
        assert sms["body"] == sms["message"]


def test_a_url_within_the_limit_or_without_a_limit_is_never_cut():
    short = row(st.SMS_RECEIVED, {"from": "+33612345678", "message": "short", "date": T})
    long = row(st.SMS_RECEIVED, {"from": "+33612345678", "message": LONG_SMS, "date": T})
    limited = AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hook", webhook_max_url=8000)
    unlimited = AccountConfig(login=LOGIN, access_key="k", webhook_url="http://h/hook")
    for account, event, text in ((limited, short, "short"), (unlimited, long, LONG_SMS)):
        sms = json.loads(parse_qs(urlsplit(wf.build_request(event, account, PARIS).url).query)["message"][0])
        assert sms["message"] == text and "truncated" not in sms


def test_the_url_limit_is_checked_at_config_load(tmp_path):
    from ops_util import write_config

    from bridge import config as config_module

    path, _, _ = write_config(tmp_path, extra="webhook_max_url = 500")
    with pytest.raises(config_module.ConfigError, match=r"webhook_max_url: must be 0 \(never cut\) or at least 1024"):
        config_module.load(path)
