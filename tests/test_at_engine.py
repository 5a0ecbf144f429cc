"""The sans-I/O AT engine, fed whole, one byte at a time and with trailing data."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agents.modem.at import (
    TRANSITIONS,
    AtEngine,
    CommandState,
    Discarded,
    Event,
    FinalResult,
    InfoLine,
    LocalProtocolError,
    Prompt,
    RemoteProtocolError,
    ResultKind,
    Urc,
    parse_args,
)

OK = FinalResult(ResultKind.OK, None, "OK")
PDU = "0001000B913316325476F8000005E8329BFD06"
TRAILING = b'\r\n+CMTI: "SM",'  # the start of a line that is not finished yet


def _engine(*commands: str) -> AtEngine:
    engine = AtEngine()
    for command in commands:
        engine.send(command)
    return engine


def tr(setup: Callable[[], AtEngine], data: bytes, expected: list[Event]) -> AtEngine:
    """h11's tr(): the same events whether ``data`` comes whole, byte by byte,
    or followed by the beginning of a line that has not ended yet."""
    engine = setup()
    engine.feed(data)
    assert engine.events() == expected, "whole"

    bytewise = setup()
    got: list[Event] = []
    for i in range(len(data)):
        bytewise.feed(data[i : i + 1])
        got.extend(bytewise.events())
    assert got == expected, "one byte at a time"
    assert bytewise.state == engine.state

    trailing = setup()
    trailing.feed(data + TRAILING)
    assert trailing.events() == expected, "with trailing data"
    return engine


# --- replies -----------------------------------------------------------------


def test_send_returns_command_with_cr() -> None:
    engine = AtEngine()
    assert engine.send("AT+CSQ") == b"AT+CSQ\r"
    assert engine.busy and engine.command == "AT+CSQ"
    assert engine.state is CommandState.WAIT_RESULT


def test_info_line_and_ok() -> None:
    engine = tr(
        lambda: _engine("AT+CSQ"),
        b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n",
        [InfoLine("+CSQ: 20,99"), OK],
    )
    assert not engine.busy and engine.command is None


def test_multiline_reply_plain_text() -> None:
    tr(
        lambda: _engine("ATI"),
        b"\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A02M4G\r\n\r\nOK\r\n",
        [InfoLine("Quectel"), InfoLine("EC25"), InfoLine("Revision: EC25EFAR06A02M4G"), OK],
    )


def test_bare_cr_and_bare_lf_line_endings() -> None:
    tr(lambda: _engine("AT+CGMI"), b"\rsimbridge\n\nOK\r", [InfoLine("simbridge"), OK])


@pytest.mark.parametrize(
    ("line", "kind", "code"),
    [
        (b"ERROR", ResultKind.ERROR, None),
        (b"+CME ERROR: 16", ResultKind.CME, 16),
        (b"+CME ERROR: incorrect password", ResultKind.CME, 16),
        (b"+CME ERROR: SIM PIN required", ResultKind.CME, 11),
        (b"+CME ERROR: something odd", ResultKind.CME, None),
        (b"+CMS ERROR: 321", ResultKind.CMS, 321),
        (b"+CMS ERROR: invalid memory index", ResultKind.CMS, 321),
        (b"COMMAND NOT SUPPORT", ResultKind.ERROR, None),
    ],
)
def test_error_results(line: bytes, kind: ResultKind, code: int | None) -> None:
    engine = tr(
        lambda: _engine("AT+CPIN=\"0000\""),
        b"\r\n" + line + b"\r\n",
        [FinalResult(kind, code, line.decode())],
    )
    assert not engine.busy
    assert not FinalResult(kind, code).ok


def test_cms_error_instead_of_prompt() -> None:
    engine = tr(
        lambda: _engine("AT+CMGS=19"),
        b"\r\n+CMS ERROR: 304\r\n",
        [FinalResult(ResultKind.CMS, 304, "+CMS ERROR: 304")],
    )
    assert engine.state is CommandState.IDLE


# --- URCs ----------------------------------------------------------------------


def test_urc_in_the_middle_of_a_reply_is_not_eaten() -> None:
    data = (
        b"\r\n+CMGL: 1,1,,24\r\n" + PDU.encode() + b"\r\n"
        b'\r\n+CMTI: "SM",2\r\n'
        b"\r\nRING\r\n"
        b"\r\n^RSSI:17\r\n"
        b"\r\n+CMGL: 2,0,,24\r\n" + PDU.encode() + b"\r\n"
        b"\r\nOK\r\n"
    )
    tr(
        lambda: _engine("AT+CMGL=4"),
        data,
        [
            InfoLine("+CMGL: 1,1,,24"),
            InfoLine(PDU),
            Urc("+CMTI", ("SM", "2"), '+CMTI: "SM",2'),
            Urc("RING", (), "RING"),
            Urc("^RSSI", ("17",), "^RSSI:17"),
            InfoLine("+CMGL: 2,0,,24"),
            InfoLine(PDU),
            OK,
        ],
    )


def test_reply_prefix_owned_by_command_is_an_info_line() -> None:
    # +CREG: is a URC prefix, but AT+CREG? asks for exactly that line
    tr(lambda: _engine("AT+CREG?"), b"\r\n+CREG: 0,1\r\n\r\nOK\r\n", [InfoLine("+CREG: 0,1"), OK])
    # ... while during another command it is unsolicited
    tr(
        lambda: _engine("AT+CSQ"),
        b"\r\n+CREG: 1\r\n+CSQ: 9,99\r\n\r\nOK\r\n",
        [Urc("+CREG", ("1",), "+CREG: 1"), InfoLine("+CSQ: 9,99"), OK],
    )
    # concatenated commands own every prefix they name
    tr(
        lambda: _engine("AT+CREG=2;+CEREG?"),
        b"\r\n+CEREG: 2,1\r\n\r\nOK\r\n",
        [InfoLine("+CEREG: 2,1"), OK],
    )


def test_urcs_while_idle() -> None:
    tr(
        AtEngine,
        b'\r\nRING\r\n\r\n+CLIP: "+33612345678",145,,,,0\r\n\r\nNO CARRIER\r\n'
        b"\r\n+CUSD: 0,\"Solde: 5,00 EUR\",15\r\n\r\nRDY\r\n\r\n+QIND: SMS DONE\r\n"
        b"\r\n^BOOT:12345,0,0,0,72\r\n\r\n^MODE:5,4\r\n\r\nSMS DONE\r\n\r\n^SYSSTART\r\n",
        [
            Urc("RING", (), "RING"),
            Urc("+CLIP", ("+33612345678", "145", "", "", "", "0"), '+CLIP: "+33612345678",145,,,,0'),
            Urc("NO CARRIER", (), "NO CARRIER"),
            Urc("+CUSD", ("0", "Solde: 5,00 EUR", "15"), '+CUSD: 0,"Solde: 5,00 EUR",15'),
            Urc("RDY", (), "RDY"),
            Urc("+QIND", ("SMS DONE",), "+QIND: SMS DONE"),
            Urc("^BOOT", ("12345", "0", "0", "0", "72"), "^BOOT:12345,0,0,0,72"),
            Urc("^MODE", ("5", "4"), "^MODE:5,4"),
            Urc("SMS DONE", (), "SMS DONE"),  # SIMCom's ready indication
            Urc("^SYSSTART", (), "^SYSSTART"),  # Cinterion's
        ],
    )


def test_unknown_prefixed_line_while_idle_is_passed_on_as_urc() -> None:
    tr(AtEngine, b"\r\n+XYZ: 1\r\n", [Urc("+XYZ", ("1",), "+XYZ: 1")])


def test_cmt_two_line_urc_is_joined() -> None:
    header = "+CMT: ,24"
    data = b"\r\n" + header.encode() + b"\r\n" + PDU.encode() + b"\r\n"
    tr(AtEngine, data, [Urc("+CMT", ("", "24"), header, PDU)])


def test_cmt_in_the_middle_of_a_reply() -> None:
    data = b"\r\n+CSQ: 20,99\r\n\r\n+CMT: ,24\r\n" + PDU.encode() + b"\r\n\r\nOK\r\n"
    tr(
        lambda: _engine("AT+CSQ"),
        data,
        [InfoLine("+CSQ: 20,99"), Urc("+CMT", ("", "24"), "+CMT: ,24", PDU), OK],
    )


def test_cmt_text_mode_second_line_is_the_text() -> None:
    header = '+CMT: "+33612345678",,"24/05/01,10:00:00+08"'
    tr(
        AtEngine,
        header.encode() + b"\r\nOK then\r\n",
        [Urc("+CMT", ("+33612345678", "", "24/05/01,10:00:00+08"), header, "OK then")],
    )


def test_cds_pdu_form_is_two_lines_text_form_one() -> None:
    report = "0006D60B911326880736F4111011719551401110117195714000"
    tr(AtEngine, b"\r\n+CDS: 25\r\n" + report.encode() + b"\r\n", [Urc("+CDS", ("25",), "+CDS: 25", report)])
    text = '+CDS: 6,46,"+31628870634",145,"21/01/11,17:59:15+04","21/01/11,17:59:17+04",0'
    tr(AtEngine, text.encode() + b"\r\n", [Urc("+CDS", parse_args(text), text)])


def test_cdsi_is_one_line() -> None:
    tr(AtEngine, b'\r\n+CDSI: "SM",3\r\n', [Urc("+CDSI", ("SM", "3"), '+CDSI: "SM",3')])


# --- prompt ------------------------------------------------------------------------


def test_prompt_then_pdu() -> None:
    engine = tr(lambda: _engine("AT+CMGS=19"), b"\r\n> ", [Prompt()])
    assert engine.state is CommandState.PROMPTED
    assert engine.send_pdu(PDU) == PDU.encode() + b"\x1a"
    engine.feed(b"\r\n+CMGS: 12\r\n\r\nOK\r\n")
    assert engine.events() == [InfoLine("+CMGS: 12"), OK]
    assert not engine.busy


def test_prompt_with_echo_and_pdu_echo() -> None:
    def setup() -> AtEngine:
        engine = _engine("AT+CMGS=19")
        engine.feed(b"AT+CMGS=19\r\r\n> ")
        assert engine.events() == [Prompt()]
        engine.send_pdu(PDU)
        return engine

    tr(setup, PDU.encode() + b"\x1a\r\n+CMGS: 7\r\n\r\nOK\r\n", [InfoLine("+CMGS: 7"), OK])


def test_prompt_byte_by_byte_does_not_leak_the_space() -> None:
    engine = _engine("AT+CMGS=19")
    for b in b">":
        engine.feed(bytes([b]))
    assert engine.events() == [Prompt()]
    engine.send_pdu(PDU)
    for b in b" \r\n+CMGS: 1\r\n\r\nOK\r\n":
        engine.feed(bytes([b]))
    assert engine.events() == [InfoLine("+CMGS: 1"), OK]


def test_greater_than_is_not_a_prompt_for_other_commands() -> None:
    tr(lambda: _engine("AT+CSQ"), b"\r\n> x\r\nOK\r\n", [InfoLine("> x"), OK])


def test_urc_between_command_and_prompt() -> None:
    tr(
        lambda: _engine("AT+CMGS=19"),
        b'\r\n+CMTI: "SM",1\r\n\r\n> ',
        [Urc("+CMTI", ("SM", "1"), '+CMTI: "SM",1'), Prompt()],
    )


# --- echo -------------------------------------------------------------------------------


def test_echo_is_dropped() -> None:
    tr(
        lambda: _engine("AT+CSQ"),
        b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n",
        [InfoLine("+CSQ: 20,99"), OK],
    )


def test_ate0_is_echoed_once_then_echo_is_off() -> None:
    engine = tr(lambda: _engine("ATE0"), b"ATE0\r\r\nOK\r\n", [OK])
    assert engine.echo is False
    engine.send("AT")
    engine.feed(b"\r\nOK\r\n")
    assert engine.events() == [OK]
    engine = tr(lambda: _engine("ATE1"), b"ATE1\r\r\nOK\r\n", [OK])
    assert engine.echo is True


def test_echo_is_matched_case_insensitively_and_only_before_the_reply() -> None:
    tr(lambda: _engine("at+cgmi"), b"at+cgmi\r\r\nAT+CGMI\r\n\r\nOK\r\n", [InfoLine("AT+CGMI"), OK])


def test_urc_before_echo_then_echo_dropped() -> None:
    tr(
        lambda: _engine("AT+CSQ"),
        b"\r\nRING\r\nAT+CSQ\r\r\n+CSQ: 5,99\r\nOK\r\n",
        [Urc("RING", (), "RING"), InfoLine("+CSQ: 5,99"), OK],
    )


# --- calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"NO CARRIER", ResultKind.NO_CARRIER),
        (b"BUSY", ResultKind.BUSY),
        (b"NO ANSWER", ResultKind.NO_ANSWER),
        (b"NO DIALTONE", ResultKind.NO_DIALTONE),
    ],
)
def test_call_results_end_a_dial(line: bytes, kind: ResultKind) -> None:
    tr(lambda: _engine("ATD+33612345678;"), b"\r\n" + line + b"\r\n", [FinalResult(kind, None, line.decode())])


def test_connect_with_speed() -> None:
    tr(lambda: _engine("ATD*99#"), b"\r\nCONNECT 9600\r\n", [FinalResult(ResultKind.CONNECT, 9600, "CONNECT 9600")])


def test_no_carrier_during_other_command_is_a_urc() -> None:
    tr(
        lambda: _engine("AT+CSQ"),
        b"\r\nNO CARRIER\r\n+CSQ: 20,99\r\nOK\r\n",
        [Urc("NO CARRIER", (), "NO CARRIER"), InfoLine("+CSQ: 20,99"), OK],
    )


# --- garbage and limits -----------------------------------------------------------------------


def test_noise_between_lines_is_deleted() -> None:
    engine = tr(
        lambda: _engine("AT+CSQ"),
        b"\x00\xff\xfe\r\n\x00+CSQ: 20,99\r\n\x80\x81\x1b\r\n\r\nO\x00K\r\n",
        [InfoLine("+CSQ: 20,99"), OK],
    )
    assert engine.noise_bytes == 8


def test_noise_alone_gives_nothing_and_does_not_wedge() -> None:
    engine = AtEngine()
    engine.feed(bytes(range(0x80, 0x100)) * 100 + b"\x00" * 10_000)
    assert engine.events() == []
    engine.send("AT")
    engine.feed(b"\r\nOK\r\n")
    assert engine.events() == [OK]


def test_over_long_line_is_discarded_and_engine_resyncs() -> None:
    long = b"A" * 5000
    tr(
        lambda: _engine("AT+CSQ"),
        b"\r\n" + long + b"\r\n+CSQ: 1,99\r\nOK\r\n",
        [Discarded("line too long", long[:64]), InfoLine("+CSQ: 1,99"), OK],
    )


def test_over_long_line_without_end_is_dropped_as_it_arrives() -> None:
    engine = AtEngine(max_line=64)
    engine.feed(b"B" * 65)
    assert engine.events() == [Discarded("line too long", b"B" * 64)]
    engine.feed(b"B" * 10_000)  # the rest of the same line: dropped silently
    assert engine.events() == []
    assert len(engine._buf) == 0
    engine.feed(b"\r\nRING\r\n")
    assert engine.events() == [Urc("RING", (), "RING")]


def test_line_at_the_cap_is_kept() -> None:
    engine = AtEngine(max_line=64)
    engine.send("AT+CMGR=1")
    engine.feed(b"C" * 64 + b"\r\nOK\r\n")
    assert engine.events() == [InfoLine("C" * 64), OK]


def test_stray_and_unexpected_lines_while_idle() -> None:
    tr(
        AtEngine,
        b"\r\nOK\r\n\r\nhello\r\n",
        [Discarded("stray final result", b"OK"), Discarded("unexpected line", b"hello")],
    )


def test_cancel_drops_the_late_reply() -> None:
    def setup() -> AtEngine:
        engine = _engine("AT+CSQ")
        assert engine.cancel() == b""
        return engine

    engine = tr(
        setup,
        b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n\r\n+CMTI: \"SM\",4\r\n",
        [
            Discarded("late reply", b"+CSQ: 20,99"),
            Discarded("late reply", b"OK"),
            Urc("+CMTI", ("SM", "4"), '+CMTI: "SM",4'),
        ],
    )
    assert not engine.busy
    engine.send("AT")


def test_cancel_while_prompted_writes_escape() -> None:
    engine = _engine("AT+CMGS=19")
    engine.feed(b"> ")
    engine.events()
    assert engine.cancel() == b"\x1b"
    assert engine.state is CommandState.IDLE


# --- misuse ---------------------------------------------------------------------------------


def test_second_command_while_busy_is_local_error() -> None:
    engine = _engine("AT+CSQ")
    with pytest.raises(LocalProtocolError):
        engine.send("AT")
    engine.feed(b"OK\r\n")
    engine.send("AT")  # fine once the first one ended


@pytest.mark.parametrize("bad", ["", "CSQ", "AT+CSQ\r", "AT\nOK", "AT+CSCS=\"é\""])
def test_bad_commands_are_local_errors(bad: str) -> None:
    with pytest.raises(LocalProtocolError):
        AtEngine().send(bad)


def test_pdu_needs_a_prompt() -> None:
    with pytest.raises(LocalProtocolError):
        AtEngine().send_pdu(PDU)
    engine = _engine("AT+CMGS=19")
    with pytest.raises(LocalProtocolError):
        engine.send_pdu(PDU)  # no prompt yet
    engine.feed(b"> ")
    engine.events()
    with pytest.raises(LocalProtocolError):
        engine.send_pdu("ABC")  # odd length
    with pytest.raises(LocalProtocolError):
        engine.send("AT")  # the PDU is due, not a command


def test_every_state_can_be_cancelled() -> None:
    for state, row in TRANSITIONS.items():
        assert row["cancel"] is CommandState.IDLE, state


def test_parse_args() -> None:
    assert parse_args('+CMTI: "SM",3') == ("SM", "3")
    assert parse_args('+COPS: 0,0,"Orange F, Paris",7') == ("0", "0", "Orange F, Paris", "7")
    assert parse_args("+CMGL: 1,0,,24") == ("1", "0", "", "24")
    assert parse_args("+CPIN: READY") == ("READY",)
    assert parse_args("") == ()
    with pytest.raises(RemoteProtocolError):
        parse_args('+CUSD: 0,"open')


# --- properties ------------------------------------------------------------------------------------

CONVERSATION = (
    b"AT+CMGL=4\r\r\n+CMGL: 1,1,,24\r\n" + PDU.encode() + b"\r\n\x00\xff\r\n+CMT: ,24\r\n"
    + PDU.encode() + b'\r\n+CMTI: "SM",2\r\n\r\nOK\r\n'
)


@given(st.lists(st.integers(min_value=1, max_value=len(CONVERSATION)), max_size=20))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    expected_engine = _engine("AT+CMGL=4")
    expected_engine.feed(CONVERSATION)
    expected = expected_engine.events()
    engine = _engine("AT+CMGL=4")
    got: list[Event] = []
    previous = 0
    for cut in sorted(set(cuts)) + [len(CONVERSATION)]:
        engine.feed(CONVERSATION[previous:cut])
        got.extend(engine.events())
        previous = cut
    assert got == expected
    assert len(expected) == 5 and expected[-1] == OK


@settings(max_examples=200)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_never_raise_and_never_wedge(data: bytes, busy: bool) -> None:
    engine = AtEngine(max_line=256)
    if busy:
        engine.send("AT+CSQ")
    engine.feed(data)
    engine.events()
    # after a line ending (and ESC for a possible prompt) the engine is usable again
    if engine.busy:
        engine.cancel()
    engine.feed(b"\r\nX\r\n")  # ends any line, and feeds a pending +CMT its PDU line
    engine.events()
    engine.send("AT")
    engine.feed(b"\r\nOK\r\n")
    assert engine.events()[-1:] == [OK]
