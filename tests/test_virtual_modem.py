"""The virtual modem, driven with pyserial over its real pty and parsed with
the AT engine — the way the modem agent will talk to a USB modem."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from device_agents.modem import pdu
from device_agents.modem.at import AtEngine, Discarded, Event, FinalResult, InfoLine, Prompt, ResultKind, Urc
from device_agents.modem.virtual import PROFILES
from device_agents.modem.virtual.faults import FaultOptions
from device_agents.modem.virtual_modem import (
    CALL_TRANSITIONS,
    CallState,
    VirtualModem,
    split_command_line,
)

FACTOR = float(os.environ.get("SIMBRIDGE_TEST_TIMEOUT_FACTOR", "1"))
TIMEOUT = 5.0 * FACTOR
ROOT = Path(__file__).resolve().parent.parent


class Client:
    """pyserial + AtEngine: one command at a time, URCs kept in ``urcs``."""

    def __init__(self, port: str) -> None:
        self.serial = serial.Serial(port, 115200, timeout=0.02)
        self.engine = AtEngine()
        self.urcs: list[Urc] = []
        self.log: list[Event] = []

    def close(self) -> None:
        self.serial.close()

    def _read(self) -> None:
        data = self.serial.read(4096)
        if data:
            self.engine.feed(data)
            for event in self.engine.events():
                self.log.append(event)
                if isinstance(event, Urc):
                    self.urcs.append(event)

    def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {self.log[-10:]}")
            self._read()

    def wait_urc(self, name: str, timeout: float = TIMEOUT) -> Urc:
        self.wait(lambda: any(u.name == name for u in self.urcs), timeout)
        urc = next(u for u in self.urcs if u.name == name)
        self.urcs.remove(urc)
        return urc

    def command(self, command: str, *, pdu_hex: str | None = None) -> tuple[list[str], FinalResult]:
        """Send ``command``; answer a prompt with ``pdu_hex``; return (info lines, final)."""
        start = len(self.log)
        self.serial.write(self.engine.send(command))
        self.wait(lambda: any(isinstance(e, FinalResult | Prompt) for e in self.log[start:]))
        if pdu_hex is not None:
            assert isinstance(self.log[-1], Prompt), self.log[start:]
            start = len(self.log)
            self.serial.write(self.engine.send_pdu(pdu_hex))
            self.wait(lambda: any(isinstance(e, FinalResult) for e in self.log[start:]))
        final = next(e for e in self.log[start:] if isinstance(e, FinalResult))
        lines = [e.text for e in self.log[start:] if isinstance(e, InfoLine)]
        return lines, final

    def ok(self, command: str, **kw: str) -> list[str]:
        lines, final = self.command(command, **kw)
        assert final.ok, (command, final)
        return lines


@pytest.fixture
def make_modem(tmp_path: Path) -> Iterator[Callable[..., tuple[VirtualModem, Client]]]:
    started: list[tuple[VirtualModem, Client]] = []

    def make(**kw: object) -> tuple[VirtualModem, Client]:
        kw.setdefault("link", tmp_path / f"modem{len(started)}")
        kw.setdefault("radio_log", tmp_path / "radio.jsonl")
        kw.setdefault("report_delay", 0.05)
        kw.setdefault("ring_interval", 0.05)
        kw.setdefault("answer_delay", 0.05)
        kw.setdefault("boot_delay", 0.0)
        modem = VirtualModem(**kw).start()  # type: ignore[arg-type]
        client = Client(str(kw["link"]))
        started.append((modem, client))
        # the boot URCs were written before we opened the port: pyserial's
        # open() flushed them, as it would a real modem's
        return modem, client

    yield make
    for modem, client in started:
        client.close()
        modem.stop()


def submit_parts(text: str, *, report: bool = False, to: str = "+33612345678") -> list[pdu.SubmitPart]:
    return pdu.encode_submit(to, text, request_report=report)


def send(client: Client, part: pdu.SubmitPart) -> int:
    lines = client.ok(f"AT+CMGS={part.tpdu_length}", pdu_hex=part.pdu.hex().upper())
    (line,) = lines
    assert line.startswith("+CMGS: ")
    return int(line.split(":")[1])


def radio_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- basics ---------------------------------------------------------------------------


def test_link_points_at_the_pty(make_modem, tmp_path: Path) -> None:
    modem, client = make_modem()
    link = tmp_path / "modem0"
    assert link.is_symlink() and os.readlink(link) == modem.port
    assert modem.port is not None and modem.port.startswith("/dev/pts/")


def test_identification_and_echo(make_modem) -> None:
    modem, client = make_modem()
    assert client.ok("AT") == []  # echo is on after boot: the engine drops it
    assert client.ok("ATI") == ["SIMBRIDGE", "VM-1", "Revision: simbridge-vm 0.1.0"]
    assert client.ok("AT+CGMI") == ["SIMBRIDGE"]
    assert client.ok("AT+CGSN") == [modem.imei]
    assert client.ok("AT+CIMI") == [modem.imsi]
    assert client.ok("ATE0") == []
    assert client.engine.echo is False
    raw_before = len(client.log)
    assert client.ok("AT+CMEE=1;+CSQ") == ["+CSQ: 21,99"]
    assert len(client.log) - raw_before == 2
    lines, final = client.command("AT+NOPE")
    assert final.kind is ResultKind.ERROR


def test_registration_and_operator_replies_are_info_lines(make_modem) -> None:
    modem, client = make_modem()
    assert client.ok("AT+CREG?") == ["+CREG: 0,1"]
    assert client.ok("AT+CEREG=2;+CEREG?") == ['+CEREG: 2,1,"1A2B","01C2D3E4",7']
    assert client.ok("AT+COPS?") == ['+COPS: 0,0,"SIMBRIDGE",7']
    ucs2 = lambda s: s.encode("utf-16-be").hex().upper()  # noqa: E731
    assert client.ok('AT+CSCS="UCS2";+COPS?') == [f'+COPS: 0,0,"{ucs2("SIMBRIDGE")}",7']
    assert client.ok("AT+CNUM") == [f'+CNUM: "","{ucs2("+33600000000")}",145']


def test_pin_codes_and_cme_errors(make_modem) -> None:
    modem, client = make_modem(pin="1234")
    client.ok("AT+CMEE=1")
    assert client.ok("AT+CPIN?") == ["+CPIN: SIM PIN"]
    _, final = client.command("AT+CIMI")
    assert (final.kind, final.code) == (ResultKind.CME, 11)
    _, final = client.command("AT+CMGL=4")
    assert (final.kind, final.code) == (ResultKind.CMS, 311)
    _, final = client.command('AT+CPIN="0000"')
    assert (final.kind, final.code) == (ResultKind.CME, 16)
    assert client.ok("AT+CPINR")[0] == "+CPINR: SIM PIN,2,3"
    client.ok("AT+CMEE=2")
    _, final = client.command('AT+CPIN="9999"')
    assert (final.kind, final.code, final.text) == (ResultKind.CME, 16, "+CME ERROR: incorrect password")
    client.ok('AT+CPIN="1234"')
    client.wait_urc("SMS READY")
    assert client.ok("AT+CPIN?") == ["+CPIN: READY"]
    assert client.ok("AT+CIMI") == [modem.imsi]


def test_three_wrong_pins_lock_the_sim_until_puk(make_modem) -> None:
    modem, client = make_modem(pin="1234")
    client.ok("AT+CMEE=1")
    for _ in range(3):
        _, final = client.command('AT+CPIN="0000"')
        assert final.code == 16
    assert client.ok("AT+CPIN?") == ["+CPIN: SIM PUK"]
    _, final = client.command('AT+CPIN="1234"')
    assert final.code == 16
    client.ok('AT+CPIN="12345678","4321"')
    assert client.ok("AT+CPIN?") == ["+CPIN: READY"]


def test_text_mode_is_refused(make_modem) -> None:
    modem, client = make_modem()
    client.ok("AT+CMEE=1")
    assert client.ok("AT+CMGF=?") == ["+CMGF: (0)"]
    _, final = client.command("AT+CMGF=1")
    assert (final.kind, final.code) == (ResultKind.CMS, 303)


# --- sending --------------------------------------------------------------------------------


def test_send_sms(make_modem, tmp_path: Path) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CMGF=0")
    (part,) = submit_parts("hello world")
    mr = send(client, part)
    [entry] = radio_log(tmp_path / "radio.jsonl")
    assert entry["to"] == "+33612345678" and entry["text"] == "hello world"
    assert entry["reference"] == mr and entry["kind"] == "sms"
    assert isinstance(entry["at"], str) and entry["at"].endswith("Z")


def test_send_sms_with_echo_on(make_modem, tmp_path: Path) -> None:
    # echo on: the modem echoes "AT+CMGS=n\r", then the PDU and Ctrl-Z
    modem, client = make_modem()
    (part,) = submit_parts("echoed")
    send(client, part)
    assert modem.transmissions[-1].text == "echoed"


def test_send_multipart(make_modem, tmp_path: Path) -> None:
    modem, client = make_modem()
    client.ok("ATE0")
    text = "Multipart message. " * 12
    parts = submit_parts(text)
    assert len(parts) == 2
    refs = [send(client, p) for p in parts]
    assert refs == sorted(set(refs))
    entries = radio_log(tmp_path / "radio.jsonl")
    assert [e["concat"]["seq"] for e in entries] == [1, 2]  # type: ignore[index]
    assert {e["concat"]["total"] for e in entries} == {2}  # type: ignore[index]
    assert "".join(str(e["text"]) for e in entries) == text


def test_bad_pdu_is_cms_304_and_escape_cancels(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CMEE=1")
    _, final = client.command("AT+CMGS=20", pdu_hex="0011")
    assert (final.kind, final.code) == (ResultKind.CMS, 304)
    client.serial.write(client.engine.send("AT+CMGS=20"))
    client.wait(lambda: isinstance(client.log[-1], Prompt))
    client.serial.write(client.engine.cancel())  # ESC: the modem answers OK, which the engine no longer waits for
    client.wait(lambda: Discarded("late reply", b"OK") in client.log)
    assert client.ok("AT") == []
    assert modem.transmissions == []


# --- status reports ----------------------------------------------------------------------------------


def test_status_report_arrives_as_cds(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CNMI=2,1,0,1,0")
    (part,) = submit_parts("report me", report=True)
    mr = send(client, part)
    urc = client.wait_urc("+CDS")
    assert urc.pdu is not None
    report = pdu.decode(urc.pdu, tpdu_length=int(urc.args[0]))
    assert isinstance(report, pdu.StatusReport)
    assert (report.reference, report.recipient, pdu.status_of(report.status_code)) == (mr, "+33612345678", "delivered")


def test_status_report_stored_with_cdsi(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CNMI=2,1,0,2,0")
    (part,) = submit_parts("store the report", report=True)
    mr = send(client, part)
    urc = client.wait_urc("+CDSI")
    assert urc.args[0] == "SM"
    lines = client.ok(f"AT+CMGR={urc.args[1]}")
    report = pdu.decode(lines[1])
    assert isinstance(report, pdu.StatusReport) and report.reference == mr


def test_no_status_report_without_srr(make_modem) -> None:
    modem, client = make_modem(report_delay=0.0)
    client.ok("ATE0;+CNMI=2,1,0,1,0")
    (part,) = submit_parts("no report please")
    send(client, part)
    (part,) = submit_parts("but this one", report=True)
    mr = send(client, part)
    urc = client.wait_urc("+CDS")  # the only report is the second message's
    report = pdu.decode(urc.pdu or "", tpdu_length=int(urc.args[0]))
    assert isinstance(report, pdu.StatusReport) and report.reference == mr


# --- receiving --------------------------------------------------------------------------------------------


def test_incoming_sms_stored_listed_read_deleted(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CMEE=1")
    assert modem.incoming_sms("+33698765432", "Bonjour €") == 1
    urc = client.wait_urc("+CMTI")
    assert urc.args == ("SM", "1")
    assert client.ok('AT+CPMS="SM","SM","SM"') == ["+CPMS: 1,30,1,30,1,30"]
    lines = client.ok("AT+CMGL=4")
    assert lines[0] == f"+CMGL: 1,0,,{len(bytes.fromhex(lines[1])) - 1 - bytes.fromhex(lines[1])[0]}"
    message = pdu.decode(lines[1])
    assert isinstance(message, pdu.Deliver)
    assert (message.sender, message.text) == ("+33698765432", "Bonjour €")
    assert client.ok("AT+CMGR=1")[0].startswith("+CMGR: 1,,")  # read now
    assert client.ok("AT+CMGL=0") == []
    client.ok("AT+CMGD=1")
    _, final = client.command("AT+CMGR=1")
    assert (final.kind, final.code) == (ResultKind.CMS, 321)


def test_incoming_long_sms_arrives_in_parts(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0")
    text = "A long incoming message, more than one part. " * 5
    assert modem.incoming_sms("+33698765432", text) == 2
    client.wait(lambda: sum(u.name == "+CMTI" for u in client.urcs) == 2)
    lines = client.ok("AT+CMGL=4")
    parts = [pdu.decode(line) for line in lines[1::2]]
    assert pdu.reassemble(parts) == text  # type: ignore[arg-type]


def test_incoming_sms_routed_as_cmt(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CNMI=2,2,0,0,0")
    modem.incoming_sms("+33698765432", "direct")
    urc = client.wait_urc("+CMT")
    message = pdu.decode(urc.pdu or "", tpdu_length=int(urc.args[1]))
    assert isinstance(message, pdu.Deliver) and message.text == "direct"
    assert modem.storage == {}


def test_incoming_sms_in_the_middle_of_a_reply(make_modem) -> None:
    # CNMI mode 3: indications go out at once, even inside a reply
    modem, client = make_modem()
    client.ok("ATE0;+CNMI=3,1,0,0,0")
    modem.incoming_sms("+33698765432", "first")
    client.wait_urc("+CMTI")
    modem.fault_slow(0.3 * FACTOR)  # the reply comes in two halves, 0.3 s apart
    start = len(client.log)
    client.serial.write(client.engine.send("AT+CMGL=4"))
    client.wait(lambda: any(isinstance(e, InfoLine) for e in client.log[start:]))
    modem.incoming_sms("+33611111111", "second")  # while the command is in progress
    client.wait(lambda: isinstance(client.log[-1], FinalResult))
    kinds = [type(e).__name__ for e in client.log[start:]]
    assert kinds == ["InfoLine", "InfoLine", "Urc", "FinalResult"], client.log[start:]
    assert client.log[start + 2] == Urc("+CMTI", ("SM", "2"), '+CMTI: "SM",2')


def test_cnmi_mode_2_holds_indications_until_the_reply_ends(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CNMI=2,1,0,0,0")
    modem.fault_slow(0.3 * FACTOR)
    start = len(client.log)
    client.serial.write(client.engine.send("AT+CSQ"))
    client.wait(lambda: any(isinstance(e, InfoLine) for e in client.log[start:]))
    modem.incoming_sms("+33611111111", "held")
    client.wait(lambda: any(u.name == "+CMTI" for u in client.urcs))
    kinds = [type(e).__name__ for e in client.log[start:]]
    assert kinds == ["InfoLine", "FinalResult", "Urc"]


def test_full_storage_keeps_messages_at_the_network(make_modem) -> None:
    modem, client = make_modem(capacity=1)
    client.ok("ATE0")
    modem.incoming_sms("+33611111111", "one")
    modem.incoming_sms("+33622222222", "two")
    client.wait_urc("+CMTI")
    assert len(modem.storage) == 1
    client.ok("AT+CMGD=1")
    urc = client.wait_urc("+CMTI")
    assert urc.args == ("SM", "1")
    message = pdu.decode(client.ok("AT+CMGR=1")[1])
    assert isinstance(message, pdu.Deliver) and message.text == "two"


# --- calls --------------------------------------------------------------------------------------------------


def test_incoming_call_ring_clip_answer_hangup(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CLIP=1")
    modem.call("+33612345678")
    client.wait_urc("RING")
    clip = client.wait_urc("+CLIP")
    assert clip.args[:2] == ("+33612345678", "145")
    client.ok("ATA")
    assert client.ok("AT+CLCC") == ['+CLCC: 1,1,0,0,0,"+33612345678",145']
    client.ok("ATH")
    assert modem.call_state is CallState.IDLE
    (record,) = modem.calls
    assert (record.direction, record.number, record.answered) == ("in", "+33612345678", True)


def test_missed_call_ends_with_no_carrier(make_modem) -> None:
    modem, client = make_modem(missed_rings=2)
    client.ok("ATE0")
    modem.call("+33612345678", missed=True)
    client.wait_urc("NO CARRIER")
    assert sum(u.name == "RING" for u in client.urcs) == 2
    assert [(c.answered, c.direction) for c in modem.calls] == [(False, "in")]


def test_answered_call_with_duration_is_hung_up_by_the_caller(make_modem, tmp_path: Path) -> None:
    modem, client = make_modem()
    client.ok("ATE0")
    modem.call("+33612345678", duration=0.1)
    client.wait_urc("RING")
    client.ok("ATA")
    client.wait_urc("NO CARRIER")
    assert modem.calls[0].answered and modem.calls[0].duration > 0.05  # call_later may fire a tick early
    assert radio_log(tmp_path / "radio.jsonl")[0]["kind"] == "call"


def test_dial_and_hang_up(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0")
    _, final = client.command("ATD+33612345678;")
    assert final.ok
    assert client.ok("AT+CLCC")[0].startswith("+CLCC: 1,0,")
    client.ok("ATH")
    assert modem.calls[0].direction == "out" and modem.calls[0].number == "+33612345678"
    _, final = client.command("ATD+33612345678")  # no ';': a data call
    assert final.kind is ResultKind.NO_CARRIER


def test_call_transitions_table_is_closed() -> None:
    for state, row in CALL_TRANSITIONS.items():
        assert set(row.values()) <= set(CallState), state
    assert CALL_TRANSITIONS[CallState.RINGING]["answer"] is CallState.ACTIVE


# --- faults ---------------------------------------------------------------------------------------------------


def test_garbage_does_not_wedge_the_link(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0")
    modem.fault_garbage(300)
    client.wait(lambda: client.engine.noise_bytes > 0)
    assert client.ok("AT+CSQ") == ["+CSQ: 21,99"]


def test_reboot_drops_settings_and_says_so(make_modem) -> None:
    modem, client = make_modem()
    client.ok("ATE0;+CMEE=2")
    modem.incoming_sms("+33611111111", "kept on the SIM")
    client.wait_urc("+CMTI")
    modem.fault_reboot()
    client.wait_urc("RDY")
    assert client.wait_urc("+CPIN").args == ("READY",)
    assert client.ok("AT+CMEE?") == ["+CMEE: 0"]  # echo is back on too: the engine dropped it
    assert len(client.ok("AT+CMGL=4")) == 2


def test_slow_replies(make_modem) -> None:
    modem, client = make_modem()
    modem.fault_slow(0.2)
    started = time.monotonic()
    client.ok("AT")
    assert time.monotonic() - started >= 0.2
    modem.fault_slow(0)
    client.ok("AT")


def test_unplug_and_replug(make_modem, tmp_path: Path) -> None:
    modem, client = make_modem()
    client.ok("ATE0")
    link = tmp_path / "modem0"
    modem.fault_unplug(0.2)
    assert not link.exists()
    with pytest.raises(serial.SerialException):
        client.serial.write(b"AT\r")
        client.wait(lambda: False, 1.0)
    client.close()
    deadline = time.monotonic() + TIMEOUT
    while not link.exists():  # udev would tell us; here we look
        assert time.monotonic() < deadline, "the link never came back"
        time.sleep(0.01)
    again = Client(str(link))
    try:
        assert again.ok("AT+CSQ") == ["+CSQ: 21,99"]
        assert modem.snapshot()["settings"]["echo"] is True  # back to defaults after the power cycle
    finally:
        again.close()


# --- control socket and CLI ---------------------------------------------------------------------------------------


def test_control_requests_in_process(make_modem) -> None:
    modem, client = make_modem()
    assert modem.control({"cmd": "nope"})["ok"] is False
    assert modem.control({"cmd": "fault", "slow": 1, "reboot": True})["ok"] is False
    assert modem.control({"cmd": "incoming_sms", "from": "+33611111111"})["ok"] is False
    assert modem.control({"cmd": "incoming_sms", "from": "+33611111111", "text": "x"}) == {"ok": True, "parts": 1}
    client.wait_urc("+CMTI")
    state = modem.control({"cmd": "state"})["state"]
    assert state["storage"] and state["call_state"] == "idle"


def test_cli_with_control_socket(tmp_path: Path) -> None:
    link, control, radio = tmp_path / "m", tmp_path / "m.ctl", tmp_path / "radio.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from device_agents.modem.sim_cli import main; sys.exit(main(sys.argv[1:]))",
         "--link", str(link), "--control", str(control), "--radio-log", str(radio),
         "--report-delay", "0.05", "--ring-interval", "0.05"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"modem-sim: {link} -> /dev/pts/")
        assert "control socket" in proc.stdout.readline()
        client = Client(str(link))
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(control))
        sock.settimeout(TIMEOUT)
        stream = sock.makefile("rwb")

        def ask(request: object) -> dict[str, object]:
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            return json.loads(stream.readline())

        try:
            client.ok("ATE0;+CLIP=1")
            assert ask({"cmd": "incoming_sms", "from": "+33698765432", "text": "via socket"}) == {"ok": True, "parts": 1}
            assert client.wait_urc("+CMTI").args == ("SM", "1")
            assert ask({"cmd": "call", "from": "+33698765432", "missed": True})["ok"] is True
            client.wait_urc("NO CARRIER")
            assert ask({"cmd": "fault", "garbage": 32})["ok"] is True
            assert ask({"cmd": "bogus"})["ok"] is False
            stream.write(b"not json\n")
            stream.flush()
            assert json.loads(stream.readline())["ok"] is False
            (part,) = pdu.encode_submit("+33612345678", "from the cli test")
            send(client, part)
            assert radio_log(radio)[-1]["text"] == "from the cli test"
        finally:
            stream.close()
            sock.close()
            client.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=TIMEOUT) == 0
    assert not link.exists() or not os.path.exists(os.readlink(link))


# --- unit bits --------------------------------------------------------------------------------------------------


def test_split_command_line() -> None:
    assert split_command_line("E0V1+CMGF=0;+CNMI=2,1") == [("E", "0"), ("V", "1"), ("+CMGF", "=0"), ("+CNMI", "=2,1")]
    assert split_command_line('+CPIN="12;34"') == [("+CPIN", '="12;34"')]
    assert split_command_line("D+33612345678;") == [("D", "+33612345678;")]
    assert split_command_line("&FS0=0") == [("&F", ""), ("S", "0=0")]
    assert split_command_line("") == []
    with pytest.raises(ValueError):
        split_command_line("!")


def test_link_never_replaces_a_regular_file(tmp_path: Path) -> None:
    precious = tmp_path / "modem"
    precious.write_text("not a device")
    with pytest.raises(FileExistsError):
        VirtualModem(link=precious).start()
    assert precious.read_text() == "not a device"


# --------------------------------------------------------------------------
# vendor profiles: each rule as its source describes it (virtual/profiles.py)


def test_cinterion_refuses_what_its_cnmi_ranges_leave_out(make_modem):
    _, c = make_modem(profile=PROFILES["cinterion-mc75i"])
    c.ok("ATE0")
    assert c.ok("AT+CNMI=?") == ["+CNMI: (0-3),(0,1),(0,2,3),(0,2),(1)"]  # gammu PR #1207
    for refused in ("AT+CNMI=2,1,0,1,0", "AT+CNMI=2,2,0,0,1", "AT+CNMI=2,1,0,2,0"):
        assert not c.command(refused)[1].ok, refused
    c.ok("AT+CNMI=2,1,0,2,1")
    assert not c.command('AT+CPMS="SM","SM","ME"')[1].ok  # ME is no receive memory


def test_quectel_announces_reports_in_sm_that_it_keeps_in_sr(make_modem):
    modem, c = make_modem(profile=PROFILES["quectel-ec25"])
    c.ok("ATE0")
    c.ok("AT+CMEE=1")
    c.ok('AT+QURCCFG="urcport","usbat"')
    c.ok("AT+CNMI=2,1,0,2,0")
    [part] = submit_parts("report please", report=True)
    c.ok(f"AT+CMGS={part.tpdu_length}", pdu_hex=part.hex)
    urc = c.wait_urc("+CDSI")
    assert urc.args == ("SM", "0")  # asterisk-chan-quectel PR #75
    assert c.ok("AT+CMGR=0") == []  # a bare OK
    c.ok('AT+CPMS="SR"')
    lines = c.ok("AT+CMGL=4")
    assert lines[0].startswith("+CMGL: 0,") and isinstance(pdu.decode(lines[1]), pdu.StatusReport)


def test_quectel_sends_no_urc_here_until_its_urc_port_is_set(make_modem):
    modem, c = make_modem(profile=PROFILES["quectel-ec25"])
    c.ok("ATE0")
    assert c.ok('AT+QURCCFG="urcport"') == ['+QURCCFG: "urcport","usbmodem"']
    modem.incoming_sms("+33698765432", "ailleurs")
    c.ok("AT")  # a round trip: a +CMTI, had it come, would be in by now
    assert not [u for u in c.urcs if u.name == "+CMTI"]
    c.ok('AT+QURCCFG="urcport","usbat"')
    modem.incoming_sms("+33698765432", "ici")
    assert c.wait_urc("+CMTI").args == ("SM", "1")  # 0-based: the first went to slot 0


def test_simcom_stores_every_sms_twice(make_modem):
    modem, c = make_modem(profile=PROFILES["simcom-sim7600"])
    c.ok("ATE0")
    modem.incoming_sms("+33698765432", "deux fois")
    first, second = c.wait_urc("+CMTI"), c.wait_urc("+CMTI")  # LilyGo-Modem-Series #155
    assert first.args != second.args
    listed = c.ok("AT+CMGL=4")
    assert len(listed) == 4 and listed[1] == listed[3]


def test_csms1_stops_routing_after_an_unacknowledged_cds(make_modem):
    modem, c = make_modem(profile=PROFILES["csms1"])
    modem.profile = dataclasses.replace(modem.profile, ack_timeout=0.2)
    c.ok("ATE0")
    c.ok("AT+CMEE=1")
    assert not c.command("AT+CNMI=2,1,0,1,0")[1].ok  # phase 2+ routing needs +CSMS=1
    c.ok("AT+CSMS=1")
    c.ok("AT+CNMI=2,1,0,1,0")
    assert c.command("AT+CNMA")[1].code == 340  # nothing to acknowledge
    [part] = submit_parts("ack me", report=True)
    c.ok(f"AT+CMGS={part.tpdu_length}", pdu_hex=part.hex)
    c.wait_urc("+CDS")
    c.ok("AT+CNMA")  # acknowledged: routing stays
    assert c.ok("AT+CNMI?") == ["+CNMI: 2,1,0,1,0"]
    [part] = submit_parts("ignore me", report=True)
    c.ok(f"AT+CMGS={part.tpdu_length}", pdu_hex=part.hex)
    c.wait_urc("+CDS")
    c.wait(lambda: modem.snapshot()["settings"]["cnmi"][3] == 0)  # TS 27.005 §3.4.4
    assert c.ok("AT+CNMI?") == ["+CNMI: 2,0,0,0,0"]


def test_faults_cut_lines_and_put_urcs_inside_replies(make_modem):
    modem, c = make_modem(faults=FaultOptions(split_lines=True, urcs_in_replies=True))
    c.ok("ATE0")
    lines = c.ok("AT+CGSN;+CIMI")
    assert lines == [modem.imei, modem.imsi]  # the engine took the unasked line out
    assert any(u.name == "+CIEV" for u in c.urcs)


def test_a_slow_network_answers_late_but_transmits_at_once(make_modem):
    modem, c = make_modem(faults=FaultOptions(network_delay=0.5))
    c.ok("ATE0")
    [part] = submit_parts("lent")
    start = len(c.log)
    c.serial.write(c.engine.send(f"AT+CMGS={part.tpdu_length}"))
    c.wait(lambda: any(isinstance(e, Prompt) for e in c.log[start:]))
    c.serial.write(c.engine.send_pdu(part.hex))
    c.wait(lambda: len(modem.snapshot()["transmissions"]) == 1)
    assert not any(isinstance(e, FinalResult) for e in c.log[start:])  # on the air, no answer yet
    c.wait(lambda: any(isinstance(e, FinalResult) for e in c.log[start:]))
