"""GSM 7-bit alphabet, packing and SMS segmentation (3GPP TS 23.038)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agents.modem import gsm7
from device_agents.modem.gsm7 import GSM7, UCS2, Segmentation, segment_count, split_text

BASIC = "".join(c for c in gsm7.DEFAULT_ALPHABET if c != "\x1b")
EXTENDED = "".join(gsm7.EXTENSION_TABLE.values())
gsm_text = st.text(alphabet=BASIC + EXTENDED, max_size=400)
any_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300
)  # no lone surrogates: they are not text anyone can send


def test_tables_have_the_right_shape():
    assert len(gsm7.DEFAULT_ALPHABET) == 128
    assert len(BASIC) == 127 == len(gsm7.CHAR_TO_SEPTET)
    assert not set(gsm7.CHAR_TO_SEPTET) & set(gsm7.CHAR_TO_EXTENSION)


def test_extension_characters_are_escape_pairs():
    assert gsm7.to_septets("€") == [0x1B, 0x65]
    assert gsm7.to_septets("a{b}") == [0x61, 0x1B, 0x28, 0x62, 0x1B, 0x29]
    assert gsm7.from_septets([0x1B, 0x65]) == "€"


def test_receiver_leniency():
    # TS 23.038 6.2.1.1: an unknown escape shows as a space; a lone trailing ESC is dropped.
    assert gsm7.from_septets([0x41, 0x1B, 0x01, 0x42]) == "A B"
    assert gsm7.from_septets([0x41, 0x1B]) == "A"


def test_to_septets_names_the_bad_character():
    with pytest.raises(ValueError, match="'Ж'"):
        gsm7.to_septets("aЖ")


def test_hellohello_packing():
    # The classic packing example (TS 23.038 6.1.2.1.1).
    assert gsm7.pack_septets(gsm7.to_septets("hellohello")).hex().upper() == "E8329BFD4697D9EC37"
    septets = gsm7.unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10)
    assert gsm7.from_septets(septets) == "hellohello"


def test_packing_with_fill_bits():
    # After a 6-octet UDH one fill bit comes first: 'h' (0x68) starts as 0xD0.
    assert gsm7.pack_septets([0x68], shift=1) == b"\xd0"
    assert gsm7.unpack_septets(b"\xd0", 1, shift=1) == [0x68]


@given(st.lists(st.integers(0, 127), max_size=200), st.integers(0, 6))
def test_pack_unpack_roundtrip(septets, shift):
    packed = gsm7.pack_septets(septets, shift=shift)
    assert len(packed) == -(-(shift + 7 * len(septets)) // 8)
    assert gsm7.unpack_septets(packed, len(septets), shift=shift) == septets


@given(gsm_text)
def test_septets_roundtrip(text):
    assert gsm7.from_septets(gsm7.to_septets(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Segmentation(GSM7, 0, 1)),
        ("a" * 160, Segmentation(GSM7, 160, 1)),
        ("a" * 161, Segmentation(GSM7, 161, 2)),
        ("a" * 306, Segmentation(GSM7, 306, 2)),
        ("a" * 307, Segmentation(GSM7, 307, 3)),
        ("€" * 80, Segmentation(GSM7, 160, 1)),
        ("€" * 81, Segmentation(GSM7, 162, 2)),
        ("Ж" * 70, Segmentation(UCS2, 70, 1)),
        ("Ж" * 71, Segmentation(UCS2, 71, 2)),
        ("😀" * 35, Segmentation(UCS2, 70, 1)),
        ("😀" * 36, Segmentation(UCS2, 72, 2)),
    ],
)
def test_segment_count(text, expected):
    assert segment_count(text) == expected


def test_escape_pair_is_never_split():
    text = "a" * 152 + "€" + "b" * 10  # the € would straddle septets 153/154
    parts = split_text(text)
    assert parts == ["a" * 152, "€" + "b" * 10]
    assert segment_count(text).parts == 2
    # 306 septets fit 2 x 153 by arithmetic, but the escape pair that
    # would straddle the boundary pushes one septet into a third part.
    text = "a" * 152 + "€" + "b" * 152
    assert gsm7.text_units(text, GSM7) == 306
    assert segment_count(text).parts == len(split_text(text)) == 3


def test_surrogate_pair_is_never_split():
    text = "Ж" * 66 + "😀" + "Ж" * 10
    assert split_text(text) == ["Ж" * 66, "😀" + "Ж" * 10]


def test_part_limits():
    assert gsm7.part_limit(GSM7) == 153
    assert gsm7.part_limit(GSM7, udh_octets=7) == 152
    assert gsm7.part_limit(UCS2) == 67
    assert gsm7.part_limit(UCS2, udh_octets=7) == 66


def test_force_ucs2_split():
    assert split_text("a" * 71, UCS2) == ["a" * 67, "aaaa"]


@settings(max_examples=150)
@given(st.one_of(gsm_text, any_text), st.booleans())
def test_split_agrees_with_segment_count(text, ref16):
    seg = segment_count(text)
    parts = split_text(text, seg.encoding, udh_octets=7 if ref16 else 6)
    assert "".join(parts) == text
    if not ref16:
        assert len(parts) == seg.parts
    if len(parts) == 1:
        assert seg.units <= gsm7.SINGLE_LIMIT[seg.encoding]
    else:
        limit = gsm7.part_limit(seg.encoding, udh_octets=7 if ref16 else 6)
        assert all(0 < gsm7.text_units(p, seg.encoding) <= limit for p in parts)
