"""Judging one message or contact (bridge.api.judging): pure functions, no
server. And the API's own import rules: judging needs no aiohttp, and only
one module of the API imports the store."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import make_config

from bridge.api import judging
from bridge.api.errors import C_EMAIL, C_INVALID, C_MISSING, E_EMPTY, E_FORBIDDEN, E_NUMBER, E_UNKNOWN
from bridge.api.judging import Rules, judge_contact, judge_message
from device_agents.modem.gsm7 import segment_count

API_DIR = Path(judging.__file__).parent


@pytest.fixture
def rules(tmp_path) -> Rules:
    return Rules.from_config(make_config(tmp_path, api={"forbidden_words": ["casino"], "default_region": "FR"}))


def test_a_valid_message_becomes_a_job_with_its_parts_counted(rules):
    for text in ("Bonjour", "Prix: 10€ " * 20, "Merci ✅ " * 12):
        judged = judge_message(3, {"phone_number": "06 12 34 56 78", "message": text, "priorite": "2",
                                   "id_sms_api": 42}, {}, 1, rules)
        seg = segment_count(text)
        assert judged.errors == () and judged.new is not None
        assert (judged.new.parts, judged.new.encoding) == (seg.parts, seg.encoding)
        assert judged.new.phone_number == judged.phone_number == "+33612345678"
        assert (judged.index, judged.new.priority, judged.new.id_sms_api) == (3, 2, "42")
        assert judged.new.ttl_s == rules.ttl_s


def test_every_fault_of_a_message_is_named_once(rules):
    judged = judge_message(0, {"phone_number": "12", "message": "  ", "priorite": 7, "url": "ftp://x"},
                           {}, 1, rules)
    assert judged.new is None
    assert judged.errors == (E_EMPTY, E_NUMBER, E_UNKNOWN)  # two faults share #009, named once
    assert "priorite must be 0, 1 or 2" in judged.detail and "url must be" in judged.detail
    assert judged.phone_number == "12"  # answered as given
    not_object = judge_message(5, "hello", {}, 1, rules)
    assert not_object.errors == (E_UNKNOWN,) and "messages[5]" in not_object.detail


def test_forbidden_words_and_over_long_texts(rules):
    assert judge_message(0, {"phone_number": "+33612345678", "message": "Au Casino ce soir"}, {}, 1,
                         rules).errors == (E_FORBIDDEN,)
    long = judge_message(0, {"phone_number": "+33612345678", "message": "x" * 5001}, {}, 1, rules)
    assert long.errors == (E_UNKNOWN,) and len(long.message) == judging.MAX_MESSAGE_CHARS


def test_date_to_send_is_read_in_the_configured_zone_unless_it_names_one(rules):
    item = {"phone_number": "+33612345678", "message": "later"}
    local = judge_message(0, {**item, "date_to_send": "2030-01-15 09:30:00"}, {}, 1, rules)
    assert local.new.due == dt.datetime(2030, 1, 15, 9, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    zoned = judge_message(0, {**item, "date_to_send": "2030-01-15T09:30:00+00:00"}, {}, 1, rules)
    assert zoned.new.due == dt.datetime(2030, 1, 15, 9, 30, tzinfo=dt.UTC).timestamp()
    from_header = judge_message(0, item, {"date_to_send": "2030-01-15 09:30:00"}, 1, rules)
    assert from_header.new.due == local.new.due
    for bad in ("tomorrow", 12, "9999-99-99 00:00:00"):
        judged = judge_message(0, {**item, "date_to_send": bad}, {}, 1, rules)
        assert judged.errors == (E_UNKNOWN,) and "date_to_send" in judged.detail


def test_a_link_placeholder_becomes_a_tracked_short_link(rules):
    judged = judge_message(0, {"phone_number": "+33612345678", "message": "Voir [Lien] ou [Link]",
                               "url": "https://example.com/offre"}, {}, 1, rules)
    code = judged.new.link_code
    assert code and len(code) == judging.LINK_CODE_CHARS
    short = f"{rules.public_url}/l/{code}"
    assert judged.new.message == f"Voir {short} ou {short}" == judged.message
    assert judged.new.parts == segment_count(judged.new.message).parts  # counted after the link is in
    plain = judge_message(0, {"phone_number": "+33612345678", "message": "[Lien]"}, {}, 1, rules)
    assert plain.new.link_code is None and plain.new.message == "[Lien]"  # no url: left as written


def test_contacts_are_judged_with_their_own_codes(rules):
    saved = judge_contact({"first_name": "Ana", "phone": "11 5555 4444", "countryCode": "+54",
                           "email": "not-an-email"}, rules.region)
    assert saved.contact is not None and saved.contact.phone_number == "+5491155554444"  # Argentine mobiles read as seed 004 does
    assert saved.errors == (C_EMAIL,)  # a warning: still saved
    assert saved.spellings == (("first_name", "Ana"),) and saved.number_key == "phone"
    assert judge_contact({"phonenumber": "12"}, rules.region).errors == (C_INVALID,)
    assert judge_contact({"firstname": "x"}, rules.region).errors == (C_MISSING,)
    assert judge_contact(["no"], rules.region).not_an_object


def test_judging_needs_no_aiohttp():
    code = ("import sys, bridge.api.judging, bridge.api.errors; "
            "assert 'aiohttp' not in sys.modules, sorted(m for m in sys.modules if 'aiohttp' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=API_DIR.parent.parent)


def test_only_one_module_of_the_api_imports_the_store():
    importers = set()
    for path in API_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n == "bridge.store" or n.startswith("bridge.store.") for n in names):
                importers.add(path.name)
    assert importers == {"_store.py"}
