"""SMS PDU codec (3GPP TS 23.040) and its command line."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from device_agents.modem import gsm7, pdu_cli
from device_agents.modem.gsm7 import GSM7, UCS2
from device_agents.modem.pdu import (
    EIGHT_BIT,
    Concat,
    Deliver,
    PduError,
    StatusReport,
    Submit,
    decode,
    encode_deliver,
    encode_status_report,
    encode_submit,
    reassemble,
    status_of,
)

# Published examples. The DELIVER comes from a real modem (Dutch network);
# the SUBMIT is the classic "hellohello" to +46708251358, validity 4 days;
# the STATUS-REPORT is a +CDS as a modem showed it, without SMSC octets.
CLASSIC_DELIVER = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
CLASSIC_SUBMIT = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
CDS_TPDU = "06000B910221815716F2709021510121807090215101718000"

UTC = UTC
T0 = datetime(2024, 5, 17, 9, 30, 15, tzinfo=timezone(timedelta(hours=2)))

BASIC = "".join(c for c in gsm7.DEFAULT_ALPHABET if c != "\x1b")
EXTENDED = "".join(gsm7.EXTENSION_TABLE.values())
gsm_text = st.text(alphabet=BASIC + EXTENDED, max_size=400)
unicode_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from("😀👍🏽€Жあ"),
    max_size=200,
)
numbers = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)
quarters = st.integers(-79, 79)
timestamps = st.builds(
    lambda dt, q: dt.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=15 * q))),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    quarters,
)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def with_smsc(tpdu_hex: str) -> str:
    return "00" + tpdu_hex


# --------------------------------------------------------------------------
# Known vectors


def test_classic_deliver():
    msg = decode(CLASSIC_DELIVER)
    assert isinstance(msg, Deliver)
    assert msg.smsc == "+31624000000"
    assert msg.sender == msg.number == "+31641600986"
    assert msg.text == "How are you?"
    assert msg.encoding == GSM7
    assert msg.concat is None and msg.udh == b""
    # Zone octet 0x08: sign bit set, zero quarters (TS 23.040 9.2.3.11), i.e. UTC.
    assert msg.timestamp == datetime(2002, 8, 26, 19, 37, 41, tzinfo=UTC)
    assert msg.timestamp.utcoffset() == timedelta(0)


def test_classic_deliver_as_bytes_and_lowercase_hex():
    assert decode(bytes.fromhex(CLASSIC_DELIVER)) == decode(CLASSIC_DELIVER.lower())
    spaced = " ".join(CLASSIC_DELIVER[i : i + 8] for i in range(0, 76, 8))
    assert decode(spaced).text == "How are you?"


def test_classic_submit_hellohello():
    [part] = encode_submit("+46708251358", "hellohello", validity=timedelta(days=4))
    assert part.hex == CLASSIC_SUBMIT
    assert part.pdu == bytes.fromhex(CLASSIC_SUBMIT)
    assert part.tpdu_length == 23
    assert (part.seq, part.total) == (1, 1)
    msg = decode(CLASSIC_SUBMIT, incoming=False)
    assert msg == Submit(
        recipient="+46708251358",
        text="hellohello",
        encoding=GSM7,
        validity=timedelta(days=4),
        data=bytes(gsm7.to_septets("hellohello")),
    )


def test_status_report_without_smsc_octets():
    msg = decode(CDS_TPDU, tpdu_length=25)
    assert isinstance(msg, StatusReport)
    assert msg.smsc is None
    assert msg.reference == 0
    assert msg.recipient == "+20121875612"
    plus2 = timezone(timedelta(hours=2))
    assert msg.scts == datetime(2007, 9, 12, 15, 10, 12, tzinfo=plus2)
    assert msg.discharge == datetime(2007, 9, 12, 15, 10, 17, tzinfo=plus2)
    assert msg.scts.utcoffset() == timedelta(hours=2)
    assert msg.status_code == 0 and msg.status == "delivered"
    assert decode(with_smsc(CDS_TPDU)) == msg
    assert decode(with_smsc(CDS_TPDU), tpdu_length=25) == msg


def test_status_report_encode_matches_vector():
    plus2 = timezone(timedelta(hours=2))
    raw = encode_status_report(
        reference=0,
        recipient="+20121875612",
        scts=datetime(2007, 9, 12, 15, 10, 12, tzinfo=plus2),
        discharge=datetime(2007, 9, 12, 15, 10, 17, tzinfo=plus2),
        status_code=0,
    )
    assert raw.hex().upper() == with_smsc(CDS_TPDU)


def test_negative_zone_decodes():
    # 0x2B: first semi-octet B = sign bit + tens 3, second 2: -32 quarters.
    msg = decode(CLASSIC_DELIVER.replace("731408", "73142B"))
    assert msg.timestamp.utcoffset() == timedelta(hours=-8)
    assert msg.timestamp.hour == 19


def test_negative_zone_encodes():
    ts = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(-timedelta(hours=3, minutes=30)))
    raw = encode_deliver("+15551234567", "x", timestamp=ts)
    assert raw[-3] == 0x49  # 14 quarters "41" swapped, sign bit 0x08
    assert decode(raw).timestamp.utcoffset() == -timedelta(hours=3, minutes=30)


def test_smsc_and_national_number():
    [part] = encode_submit("0612345678", "hi", smsc="+31624000000")
    assert part.hex.startswith("07911326040000F0" + "01000A816021436587")
    assert part.tpdu_length == len(part.pdu) - 8
    msg = decode(part.pdu, incoming=False)
    assert msg.smsc == "+31624000000" and msg.recipient == "0612345678"


def test_star_and_hash_digits():
    [part] = encode_submit("*100#", "x")
    assert "05811A00FB" in part.hex  # "*1" "00" "#" + filler
    assert decode(part.hex, incoming=False).recipient == "*100#"


def test_report_and_validity_bits():
    [part] = encode_submit("+33612345678", "x", request_report=True, validity=timedelta(hours=1))
    # SMSC "00", first octet, TP-MR, TP-DA (2 + 6), TP-PID, TP-DCS, then TP-VP
    first, vp = part.pdu[1], part.pdu[1 + 1 + 1 + 8 + 1 + 1]
    assert first == 0x31  # SUBMIT, VPF relative, SRR
    assert vp == 11  # (11 + 1) x 5 minutes
    msg = decode(part.pdu, incoming=False)
    assert msg.request_report and msg.validity == timedelta(hours=1)


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        (timedelta(minutes=1), timedelta(minutes=5)),
        (timedelta(minutes=61), timedelta(minutes=65)),
        (timedelta(hours=12, minutes=1), timedelta(hours=12, minutes=30)),
        (timedelta(hours=25), timedelta(days=2)),
        (timedelta(days=31), timedelta(weeks=5)),
        (timedelta(days=1000), timedelta(weeks=63)),
    ],
)
def test_validity_rounds_up(asked, got):
    [part] = encode_submit("+33612345678", "x", validity=asked)
    assert decode(part.pdu, incoming=False).validity == got


def test_ucs2_deliver():
    raw = encode_deliver("+79161234567", "Привет", timestamp=T0)
    assert raw.hex().upper().endswith("0C041F04400438043204350442")
    msg = decode(raw)
    assert (msg.text, msg.encoding, msg.dcs) == ("Привет", UCS2, 0x08)


def test_alphanumeric_sender():
    raw = encode_deliver("InfoSMS", "Your code is 1234", timestamp=T0)
    assert raw[1:4] == bytes([0x04, 0x0D, 0xD0])  # 13 useful semi-octets, TON alphanumeric
    assert raw[4:11] == gsm7.pack_septets(gsm7.to_septets("InfoSMS"))
    assert decode(raw).sender == "InfoSMS"


def test_alphanumeric_sender_with_octet_count_length():
    # Some networks give the length as 2 x octets (14): the padding is no '@'.
    raw = bytearray(encode_deliver("InfoSMS", "x", timestamp=T0))
    raw[2] = 0x0E
    assert decode(bytes(raw)).sender == "InfoSMS"


def test_concat_8bit_header_and_fill_bit():
    raw = encode_deliver("+33612345678", "hello", timestamp=T0, concat=(0xCC, 2, 1))
    ud = raw[-(6 + 5) :]
    assert ud[:6] == bytes.fromhex("050003CC0201")
    assert ud[6] == 0xD0  # 'h' shifted by one fill bit
    assert raw[-12] == 7 + 5  # TP-UDL counts the header's 7 septets
    msg = decode(raw)
    assert msg.concat == Concat(0xCC, 2, 1)
    assert msg.udh == bytes.fromhex("050003CC0201")
    assert msg.text == "hello"


def test_concat_16bit_header():
    raw = encode_deliver(
        "+33612345678", "hello", timestamp=T0, concat=Concat(0x1234, 3, 2), ref16=True
    )
    assert bytes.fromhex("06" "0804" "1234" "03" "02") in raw
    assert decode(raw).concat == Concat(0x1234, 3, 2)


def test_invalid_concat_ie_is_ignored():
    raw = encode_deliver("+33612345678", "hi", timestamp=T0, concat=(1, 2, 1))
    raw = raw.replace(bytes.fromhex("050003010201"), bytes.fromhex("050003010200"))
    msg = decode(raw)
    assert msg.concat is None and msg.text == "hi"


def test_unknown_ie_is_skipped():
    # 8-bit DELIVER whose UDH has an unknown IE 0x70 before the concatenation IE.
    udh = bytes.fromhex("08" "700100" "0003070302")
    ud = udh + b"ok"
    head = bytes.fromhex("00" "44" "0B913316325476F8" "00" "04" "42507190035180")
    msg = decode(head + bytes([len(ud)]) + ud)
    assert msg.concat == Concat(7, 3, 2)
    assert (msg.text, msg.encoding, msg.data) == ("ok", EIGHT_BIT, b"ok")


def test_8bit_is_latin1_with_raw_bytes():
    raw = encode_deliver("+33612345678", "caf\xe9\x00\xff", timestamp=T0, encoding=EIGHT_BIT)
    msg = decode(raw)
    assert msg.encoding == EIGHT_BIT and msg.dcs == 0x04
    assert msg.data == b"caf\xe9\x00\xff" and msg.text == "caf\xe9\x00\xff"


@pytest.mark.parametrize(
    ("dcs", "encoding"),
    [(0x00, GSM7), (0x04, EIGHT_BIT), (0x08, UCS2), (0x0C, GSM7), (0x10, GSM7), (0x18, UCS2),
     (0x24, EIGHT_BIT), (0xC0, GSM7), (0xD0, GSM7), (0xE0, UCS2), (0xF0, GSM7), (0xF4, EIGHT_BIT),
     (0x80, GSM7)],
)
def test_dcs_alphabets(dcs, encoding):
    raw = bytearray(encode_deliver("+33612345678", "", timestamp=T0))
    raw[11] = dcs  # TP-DCS after SMSC (1), first octet (1), TP-OA (2 + 6), TP-PID (1)
    assert decode(bytes(raw)).encoding == encoding


@pytest.mark.parametrize(
    ("code", "status"),
    [(0x00, "delivered"), (0x02, "delivered"), (0x1F, "delivered"), (0x20, "pending"),
     (0x3F, "pending"), (0x40, "failed"), (0x60, "failed"), (0x7F, "failed"), (0xFF, "failed")],
)
def test_status_ranges(code, status):
    assert status_of(code) == status
    raw = encode_status_report(
        reference=9, recipient="+33612345678", scts=T0, discharge=T0, status_code=code
    )
    assert decode(raw).status == status


def test_status_report_optional_parameters_are_ignored():
    raw = encode_status_report(
        reference=200, recipient="0612345678", scts=T0, discharge=T0 + timedelta(seconds=5),
        status_code=0x30, smsc="+33609001390",
    )
    msg = decode(raw + bytes.fromhex("00"))  # TP-PI = 0
    assert (msg.reference, msg.recipient, msg.status) == (200, "0612345678", "pending")
    assert msg.smsc == "+33609001390"


def test_stored_submit_reads_as_submit_when_incoming():
    assert isinstance(decode(CLASSIC_SUBMIT), Submit)


def test_reassemble_joins_raw_payloads():
    # A sender that splits a surrogate pair across parts: each part alone is
    # broken UTF-16, the joined payload is the emoji. Each PDU is an empty
    # UCS-2 part (TP-UDL then the 6-octet UDH) to which half the pair is added.
    emoji = "😀".encode("utf-16-be")
    raws = [
        encode_deliver("+33612345678", "", timestamp=T0, concat=(1, 2, seq), encoding=UCS2)
        for seq in (1, 2)
    ]
    parts = []
    for raw, chunk in zip(raws, (emoji[:2], emoji[2:]), strict=False):
        raw = raw[:-7] + bytes([raw[-7] + 2]) + raw[-6:] + chunk  # UDL += 2, append half
        parts.append(decode(raw))
    assert parts[0].text == "\ufffd"
    assert reassemble(reversed(parts)) == "😀"
    with pytest.raises(ValueError, match="missing"):
        reassemble(parts[:1])


# --------------------------------------------------------------------------
# Round trips


def _fit(text: str, encoding: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` units."""
    used = 0
    for i, c in enumerate(text):
        used += gsm7.char_units(c, encoding)
        if used > limit:
            return text[:i]
    return text


@FAST
@given(
    number=numbers,
    text=st.one_of(gsm_text, unicode_text),
    smsc=st.none() | numbers,
    request_report=st.booleans(),
    validity=st.none() | st.integers(0, 255).map(lambda vp: _vp(vp)),
    reference=st.integers(0, 255),
    concat_ref=st.none() | st.integers(0, 255),
    force_ucs2=st.booleans(),
)
def test_submit_roundtrip(
    number, text, smsc, request_report, validity, reference, concat_ref, force_ucs2
):
    parts = encode_submit(
        number, text, smsc=smsc, request_report=request_report, validity=validity,
        reference=reference, concat_ref=concat_ref, force_ucs2=force_ucs2,
    )
    seg = gsm7.segment_count(text)
    if not force_ucs2:
        assert len(parts) == seg.parts
    decoded = [decode(p.pdu, incoming=False) for p in parts]
    for part, msg in zip(parts, decoded, strict=False):
        assert part.tpdu_length == len(part.pdu) - 1 - part.pdu[0]
        assert len(part.pdu) - 1 - part.pdu[0] <= 164  # never more than one SMS
        assert isinstance(msg, Submit)
        assert msg.recipient == number and msg.smsc == smsc
        assert msg.reference == reference and msg.request_report == request_report
        assert msg.validity == validity
        assert msg.encoding == (UCS2 if force_ucs2 else seg.encoding)
        if part.total == 1:
            assert msg.concat is None
        else:
            assert (msg.concat.total, msg.concat.seq) == (part.total, part.seq)
            if concat_ref is not None:
                assert msg.concat.ref == concat_ref
    assert "".join(m.text for m in decoded) == text
    assert reassemble(decoded) == text


@FAST
@given(
    text=st.text(alphabet="a€", min_size=150, max_size=400)
    | st.text(alphabet="жa😀", min_size=60, max_size=200)
    | st.text(alphabet=BASIC + EXTENDED, min_size=150, max_size=700),
    ref16=st.booleans(),
)
def test_multipart_submit_roundtrip(text, ref16):
    """Long texts, with escape pairs and surrogate pairs near part boundaries."""
    parts = encode_submit("+33612345678", text, concat_ref=0x1FF if ref16 else 0xFF, ref16=ref16)
    decoded = [decode(p.hex, incoming=False) for p in parts]
    if not ref16:
        assert len(parts) == gsm7.segment_count(text).parts
    for part, msg in zip(parts, decoded, strict=False):
        assert part.tpdu_length <= 164
        if part.total > 1:
            assert msg.concat == Concat(0x1FF if ref16 else 0xFF, part.total, part.seq)
            assert msg.udh[1] == (0x08 if ref16 else 0x00)
    assert "".join(m.text for m in decoded) == text == reassemble(decoded)


def _vp(vp: int) -> timedelta:
    from device_agents.modem.pdu import _vp_duration

    return _vp_duration(vp)


alpha_senders = st.text(alphabet=BASIC + EXTENDED, min_size=1, max_size=11).filter(
    lambda s: len(gsm7.to_septets(s)) <= 11
    and not (len(gsm7.to_septets(s)) == 8 and s.endswith("@"))
)


@FAST
@given(
    sender=numbers | alpha_senders,
    text=st.one_of(gsm_text, unicode_text, st.text(alphabet=st.characters(max_codepoint=255))),
    timestamp=timestamps,
    smsc=st.none() | numbers,
    concat=st.none() | st.tuples(st.integers(0, 255), st.integers(1, 255), st.integers(1, 255)),
    ref16=st.booleans(),
    encoding=st.sampled_from([None, UCS2, EIGHT_BIT, GSM7]),
)
def test_deliver_roundtrip(sender, text, timestamp, smsc, concat, ref16, encoding):
    if encoding == EIGHT_BIT:
        assume(all(ord(c) < 256 for c in text))
    if encoding == GSM7:
        assume(gsm7.is_gsm7(text))
    if concat is not None:
        ref, total, seq = concat
        assume(seq <= total)
        concat = (ref * 257 if ref16 else ref, total, seq)
    used = encoding or gsm7.pick_encoding(text)
    udh_octets = (7 if ref16 else 6) if concat else 0
    if used == EIGHT_BIT:
        text = text[: 140 - udh_octets]
    else:
        limit = gsm7.part_limit(used, udh_octets=udh_octets) if concat else gsm7.SINGLE_LIMIT[used]
        text = _fit(text, used, limit)
    raw = encode_deliver(
        sender, text, timestamp=timestamp, smsc=smsc, concat=concat, ref16=ref16, encoding=encoding
    )
    msg = decode(raw)
    assert isinstance(msg, Deliver)
    assert (msg.sender, msg.text, msg.encoding, msg.smsc) == (sender, text, used, smsc)
    assert msg.timestamp == timestamp
    assert msg.timestamp.utcoffset() == timestamp.utcoffset()
    assert msg.concat == (Concat(*concat) if concat else None)
    assert decode(raw.hex()) == msg


@FAST
@given(
    reference=st.integers(0, 255),
    recipient=numbers,
    scts=timestamps,
    discharge=timestamps,
    status_code=st.integers(0, 255),
    smsc=st.none() | numbers,
)
def test_status_report_roundtrip(reference, recipient, scts, discharge, status_code, smsc):
    raw = encode_status_report(
        reference=reference, recipient=recipient, scts=scts, discharge=discharge,
        status_code=status_code, smsc=smsc,
    )
    msg = decode(raw)
    assert msg == StatusReport(reference, recipient, scts, discharge, status_code, smsc)
    assert msg.scts.utcoffset() == scts.utcoffset()


# --------------------------------------------------------------------------
# Malformed input: PduError and nothing else


SAMPLES = [
    CLASSIC_DELIVER,
    with_smsc(CDS_TPDU),
    encode_deliver("InfoSMS", "€uro {x}", timestamp=T0, concat=(3, 2, 2)).hex(),
    encode_deliver("+336123", "Жёлтый 😀", timestamp=T0, concat=(0x1234, 2, 1), ref16=True).hex(),
    encode_submit("+336123", "a" * 200, request_report=True, validity=timedelta(days=1))[1].hex,
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_truncation_is_a_pdu_error(sample):
    raw = bytes.fromhex(sample)
    incoming = raw[raw[0] + 1] & 3 != 1
    decode(raw, incoming=incoming)
    for n in range(len(raw)):
        with pytest.raises(PduError):
            decode(raw[:n], incoming=incoming)


@pytest.mark.parametrize("sample", [CLASSIC_DELIVER, CLASSIC_SUBMIT])
def test_trailing_octets_are_a_pdu_error(sample):
    with pytest.raises(PduError, match="trailing"):
        decode(sample + "00")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "truncated"),
        ("0", "odd number"),
        ("00ZZ", "bad hex"),
        ("00é0", "bad hex"),
        (CLASSIC_DELIVER[:-2], "truncated"),
        (CLASSIC_DELIVER.replace("208062", "201362"), "month"),
        (CLASSIC_DELIVER.replace("208062", "2A8062"), "not two decimal digits"),
        (CLASSIC_DELIVER.replace("1346610089F6", "1346610089FF"), "filler"),
        ("0007", "reserved"),
        ("00440B913316325476F800004250719003518002" "0500", "UDHL 5 overruns"),
        ("00440B913316325476F800004250719003518003020003", "overruns"),
        ("00440B913316325476F800004250719003518001" "00", "shorter than the user data header"),
    ],
)
def test_malformed_pdus(data, message):
    with pytest.raises(PduError, match=message):
        decode(data)


def test_outgoing_direction_rejects_deliver_reports():
    with pytest.raises(PduError, match="DELIVER-REPORT"):
        decode(CLASSIC_DELIVER, incoming=False)


def test_tpdu_length_mismatch():
    with pytest.raises(PduError, match="bad length"):
        decode(CLASSIC_DELIVER, tpdu_length=20)


def test_pdu_error_is_a_value_error():
    assert issubclass(PduError, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_raise_only_pdu_error(data, incoming):
    with contextlib.suppress(PduError):
        decode(data, incoming=incoming)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_pdus_raise_only_pdu_error(sample, data):
    raw = bytearray.fromhex(sample)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(PduError):
        decode(bytes(raw), incoming=data.draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_strings_raise_only_pdu_error(text):
    with contextlib.suppress(PduError):
        decode(text)


# --------------------------------------------------------------------------
# Encoder misuse: plain ValueError


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_submit("+33 6 12", "x"),
        lambda: encode_submit("", "x"),
        lambda: encode_submit("+" + "1" * 21, "x"),
        lambda: encode_submit("+33612345678", "x", smsc="smsc"),
        lambda: encode_submit("+33612345678", "x", reference=256),
        lambda: encode_submit("+33612345678", "x", validity=timedelta(0)),
        lambda: encode_submit("+33612345678", "x" * 161, concat_ref=256),
        lambda: encode_submit("+33612345678", "x" * (153 * 256)),
        lambda: encode_deliver("+33612345678", "x", timestamp=datetime(2024, 1, 1)),
        lambda: encode_deliver("+33612345678", "x", timestamp=T0.replace(year=1999)),
        lambda: encode_deliver("+336", "x", timestamp=T0.astimezone(timezone(timedelta(minutes=7)))),
        lambda: encode_deliver("+33612345678", "x" * 161, timestamp=T0),
        lambda: encode_deliver("+33612345678", "x" * 154, timestamp=T0, concat=(1, 2, 1)),
        lambda: encode_deliver("+33612345678", "Ж", timestamp=T0, encoding=GSM7),
        lambda: encode_deliver("+33612345678", "Ж", timestamp=T0, encoding=EIGHT_BIT),
        lambda: encode_deliver("+33612345678", "x", timestamp=T0, encoding="utf8"),
        lambda: encode_deliver("+33612345678", "x", timestamp=T0, concat=(1, 2, 3)),
        lambda: encode_deliver("TwelveLetter", "x", timestamp=T0),
        lambda: encode_deliver("Жорж", "x", timestamp=T0),
        lambda: encode_status_report(
            reference=1, recipient="Info", scts=T0, discharge=T0, status_code=0
        ),
    ],
)
def test_encoder_misuse_is_value_error(call):
    with pytest.raises(ValueError) as info:
        call()
    assert not isinstance(info.value, PduError)


# --------------------------------------------------------------------------
# Command line: simbridge pdu …


def test_cli_encode(capsys):
    assert pdu_cli.main(["encode", "--to", "+46708251358", "hellohello"]) == 0
    out = capsys.readouterr().out
    assert out == "0001000B916407281553F800000AE8329BFD4697D9EC37\n"


def test_cli_encode_options_and_verbose(capsys):
    argv = ["encode", "--to", "+33612345678", "--report", "--smsc", "+33609001390", "-v"]
    argv += ["hello", "world"]
    assert pdu_cli.main(argv) == 0
    comment, line = capsys.readouterr().out.splitlines()
    msg = decode(line, incoming=False)
    assert (msg.text, msg.request_report, msg.smsc) == ("hello world", True, "+33609001390")
    assert comment == f"# part 1/1: AT+CMGS={len(bytes.fromhex(line)) - 8}"


def test_cli_encode_multipart(capsys):
    assert pdu_cli.main(["encode", "--to", "0612345678", "--ref", "42", "é" * 200]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    msgs = [decode(line, incoming=False) for line in lines]
    assert [m.concat for m in msgs] == [Concat(42, 2, 1), Concat(42, 2, 2)]
    assert reassemble(msgs) == "é" * 200


def test_cli_decode_deliver(capsys):
    assert pdu_cli.main(["decode", CLASSIC_DELIVER]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "type": "deliver",
        "number": "+31641600986",
        "text": "How are you?",
        "encoding": "gsm7",
        "smsc": "+31624000000",
        "timestamp": "2002-08-26T19:37:41+00:00",
        "concat": None,
        "reference": None,
    }


def test_cli_decode_concat_ucs2(capsys):
    raw = encode_deliver("InfoSMS", "Ж😀", timestamp=T0, concat=(7, 3, 2))
    assert pdu_cli.main(["decode", raw.hex()]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["number"] == "InfoSMS" and obj["text"] == "Ж😀" and obj["encoding"] == "ucs2"
    assert obj["concat"] == {"ref": 7, "total": 3, "seq": 2}
    assert obj["timestamp"] == "2024-05-17T09:30:15+02:00"


def test_cli_decode_status_report(capsys):
    assert pdu_cli.main(["decode", with_smsc(CDS_TPDU)]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["type"] == "status_report"
    assert (obj["number"], obj["reference"], obj["status"], obj["status_code"]) == (
        "+20121875612", 0, "delivered", 0,
    )
    assert obj["timestamp"] == "2007-09-12T15:10:12+02:00"
    assert obj["text"] is None and obj["concat"] is None


def test_cli_decode_submit(capsys):
    assert pdu_cli.main(["decode", CLASSIC_SUBMIT]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (obj["type"], obj["number"], obj["text"], obj["reference"], obj["timestamp"]) == (
        "submit", "+46708251358", "hellohello", 0, None,
    )
    assert pdu_cli.main(["decode", "--outgoing", CLASSIC_SUBMIT]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "submit"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decode", "00ZZ"], "bad hex"),
        (["decode", CLASSIC_DELIVER[:40]], "truncated"),
        (["decode", "--outgoing", CLASSIC_DELIVER], "DELIVER-REPORT"),
        (["encode", "--to", "not-a-number", "hi"], "number"),
        (["encode", "hi"], "--to"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_cli_errors_exit_2(capsys, argv, message):
    assert pdu_cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_cli_help_exits_0(capsys):
    assert pdu_cli.main(["--help"]) == 0
    assert "encode" in capsys.readouterr().out
