"""Pure pieces of the API: opt-out keywords, forbidden words, numbers, config keys."""

from __future__ import annotations

import pytest

from bridge import config
from bridge.api import verification
from bridge.api.judging import forbidden_matcher
from bridge.core import numbers
from bridge.core.optout import OPT_IN, OPT_OUT, Keywords
from device_agents.common import mask_number


@pytest.mark.parametrize("text, expected", [
    ("STOP", OPT_OUT), ("stop", OPT_OUT), (" Stop. ", OPT_OUT), ("Arrêt !", OPT_OUT), ("ARRET", OPT_OUT),
    ("unsubscribe", OPT_OUT), ("START", OPT_IN), ("start", OPT_IN),
    ("stop sending me this", None), ("Hello", None), ("", None), ("STOP" * 30, None),
])
def test_keywords(text, expected):
    assert Keywords().classify(text) == expected


def test_keywords_are_configurable():
    words = Keywords(stop=["BASTA"], start=["ENCORE"])
    assert words.classify("basta") == OPT_OUT and words.classify("STOP") is None
    assert words.classify("Encore") == OPT_IN


def test_forbidden_words_match_whole_words_any_case_and_accents():
    find = forbidden_matcher(("casino", "crédit facile"))
    assert find("Go to the CASINO") == "casino"
    assert find("un credit FACILE") == "credit facile"
    assert find("casinos") is None and find("hello") is None
    assert forbidden_matcher(()) is None  # nothing to look for


def test_numbers():
    assert numbers.normalise("+33612345678") == "+33612345678"
    assert numbers.normalise("0033 6 12 34 56 78") == "+33612345678"
    assert numbers.normalise("0612345678", "FR") == "+33612345678"
    for bad in ("0612345678", "+1XXXXXXXXXX", "", None, True, "1" * 100, {"a": 1}):
        with pytest.raises(ValueError):
            numbers.normalise(bad)
    assert numbers.normalise_or_keep("SFR-INFO") == "SFR-INFO"
    assert mask_number("+33612345678") == "+336****5678"
    info = numbers.describe("1155554444", "AR")
    # Seed 004 reads it as the mobile +54 9 11 5555-4444 (an SMS goes to mobiles only).
    assert info["is_invalid"] is False and info["is_mobile"] is True
    assert info["international_number"] == "+5491155554444" and info["number"] == "1155554444"
    # A number that is no mobile with the 9 either (toll-free) stays what it is.
    assert numbers.normalise("0800 123 4567", "AR") == "+548001234567"
    assert numbers.describe("+33612345678", None)["operator"] == "SFR"


def test_codes_are_hashed_and_compared():
    salt = verification.new_salt()
    digest = verification.digest("123456", salt)
    assert verification.matches("123456", salt, digest)
    assert not verification.matches("123457", salt, digest)
    assert verification.digest("123456", verification.new_salt()) != digest
    assert len(verification.new_code(8)) == 8


def test_config_keys():
    parsed = config.parse({"api": {"default_region": "fr", "forbidden_words": ["casino"],
                                   "stop_words": ["STOP", "BASTA"], "start_words": ["START"]}})
    assert parsed.api.default_region == "FR" and parsed.api.forbidden_words == ("casino",)
    assert parsed.api.stop_words == ("STOP", "BASTA")
    assert "STOP" in config.parse({}).api.stop_words
    for bad, key in (({"default_region": "XX"}, "api.default_region"), ({"stop_words": [""]}, "api.stop_words"),
                     ({"forbidden_words": "casino"}, "api.forbidden_words"),
                     ({"start_words": [1]}, "api.start_words")):
        with pytest.raises(config.ConfigError, match=key):
            config.parse({"api": bad})
