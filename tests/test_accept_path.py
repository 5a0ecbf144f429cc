"""The accept path's fast paths give exactly what the slow ones gave: ids,
the lone-surrogate check of JSON bodies, and E.164 numbers judged from
phonenumbers' metadata without building a PhoneNumber."""

from __future__ import annotations

import collections
import random

import aiohttp
import phonenumbers
import pytest
from api_util import serving
from conftest import api_url, make_config

from bridge.core import numbers
from bridge.store.model import ID_ALPHABET, new_id_sms_api, random_text


def test_ids_are_15_characters_of_the_alphabet_and_every_character_is_used():
    ids = [new_id_sms_api() for _ in range(4000)]
    assert all(len(i) == 15 and set(i) <= set(ID_ALPHABET) for i in ids)
    assert len(set(ids)) == len(ids)
    counts = collections.Counter("".join(ids))
    # 60,000 characters over 62: about 968 each; a biased mapping (byte % 62)
    # would give the first 8 characters ~1,100.
    assert set(counts) == set(ID_ALPHABET)
    assert max(counts.values()) < 1100 and min(counts.values()) > 840


def test_random_text_of_any_length():
    assert random_text(0) == ""
    assert len(random_text(300)) == 300


def _slow(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_fast_e164_agrees_with_phonenumbers_on_random_and_example_numbers():
    rng = random.Random(7)
    codes = list(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    texts = ["+" + str(rng.choice(codes)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 14)))
             for _ in range(30000)]
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in range(11):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                texts.append(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    decided = 0
    for text in texts:
        fast = numbers._fast_e164(text)
        if fast is not None:
            decided += 1
            assert fast == _slow(text), text
        # Whatever the fast path says, normalise answers as phonenumbers does.
        try:
            assert numbers.normalise(text) == _slow(text), text
        except ValueError:
            assert _slow(text) is None, text
    assert decided > 1000  # the fast path is taken, not always declined


@pytest.mark.parametrize("text", ["+33 6 12 34 56 78", "+330612345678", "0033612345678", "+1 212 555 0123",
                                  "+79161234567", "+12125550123"])
def test_other_forms_still_go_through_phonenumbers(text):
    assert numbers.normalise(text) == _slow(text.replace("00", "+", 1) if text.startswith("00") else text)


def test_time_zone_is_the_numbers_only_zone():
    assert numbers.time_zone("+33612345678") == "Europe/Paris"
    assert numbers.time_zone("+12125550123") == "America/New_York"
    assert numbers.time_zone("+79161234567") is None  # Russia spans eleven zones: the number does not say


@pytest.mark.parametrize(("body", "status"), [
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"x": "\\ud800"}', 400),  # a lone surrogate escaped in JSON
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"\\udfff": 1}', 400),  # in a key
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"x": "\xed\xa0\x80"}', 400),  # encoded in the bytes themselves
    (b'{"header": {"login": "user@email.com", "accessKey": "your-access-key"}, "messages": [], '
     b'"x": "\\ud83d\\ude00 \\u00e9"}', 200),  # a pair is text
])
async def test_bodies_with_lone_surrogates_are_refused(tmp_path, body, status):
    async with serving(make_config(tmp_path, devices=[])) as daemon, aiohttp.ClientSession() as http, \
            http.post(api_url(daemon, "/api/v1/sendsms"), data=body,
                      headers={"Content-Type": "application/json"}) as resp:
        answer = await resp.text()
        assert resp.status == status, answer
        if status == 400:
            assert "not valid Unicode" in answer
