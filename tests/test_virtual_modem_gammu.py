"""Debian's gammu against the virtual modem, in every vendor profile: it must
identify it, send through it and read from it as from a USB modem. Skipped
without gammu."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agents.modem.virtual import PROFILES, VirtualModem

pytestmark = pytest.mark.skipif(shutil.which("gammu") is None, reason="gammu is not installed")

FACTOR = float(os.environ.get("SIMBRIDGE_TEST_TIMEOUT_FACTOR", "1"))


PROFILE_NAMES = sorted(name for name in PROFILES if name != "simcom-a7670")  # an alias


@pytest.fixture(params=PROFILE_NAMES)
def modem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VirtualModem]:
    with VirtualModem(link=tmp_path / "modem", radio_log=tmp_path / "radio.jsonl", report_delay=0.05,
                      profile=PROFILES[request.param]) as m:
        yield m


def gammu(modem: VirtualModem, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "gammurc"
    log = tmp_path / "gammu.log"
    config.write_text(f"[gammu]\ndevice = {modem.link}\nconnection = at\nlogformat = textall\nlogfile = {log}\n")
    try:
        return subprocess.run(
            ["gammu", "-c", str(config), *args],
            capture_output=True,
            text=True,
            timeout=60 * FACTOR,
            check=False,
        )
    except subprocess.TimeoutExpired:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        raise AssertionError(f"gammu {' '.join(args[:2])} hung; its log ends:\n{tail}") from None


def radio_log(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "radio.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_gammu_identifies_the_modem(modem: VirtualModem, tmp_path: Path) -> None:
    result = gammu(modem, tmp_path, "identify")
    assert result.returncode == 0, result.stdout + result.stderr
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in result.stdout.splitlines())
    }
    assert fields["Manufacturer"].lower() == modem.manufacturer.lower()
    assert modem.model in fields["Model"]
    assert fields["Firmware"] == modem.revision
    assert fields["IMEI"] == modem.imei
    assert fields["SIM IMSI"] == modem.imsi


def test_gammu_sends_an_sms(modem: VirtualModem, tmp_path: Path) -> None:
    result = gammu(modem, tmp_path, "sendsms", "TEXT", "+33612345678", "-text", "hello")
    assert result.returncode == 0, result.stdout + result.stderr
    [entry] = radio_log(tmp_path)
    assert f"OK, message reference={entry['reference']}" in result.stdout + result.stderr
    assert (entry["to"], entry["text"]) == ("+33612345678", "hello")
    assert "AT+CMGS=" in " ".join(modem.commands)


def test_gammu_sends_a_long_sms_with_report(modem: VirtualModem, tmp_path: Path) -> None:
    text = "Long message from gammu. " * 10
    result = gammu(modem, tmp_path, "sendsms", "TEXT", "+33612345678", "-report", "-len", "400", "-text", text)
    assert result.returncode == 0, result.stdout + result.stderr
    entries = radio_log(tmp_path)
    assert [e["concat"]["seq"] for e in entries] == [1, 2]  # type: ignore[index]
    assert all(e["report_requested"] for e in entries)
    assert "".join(str(e["text"]) for e in entries) == text


def test_gammu_reads_an_incoming_sms(modem: VirtualModem, tmp_path: Path) -> None:
    modem.incoming_sms("+33698765432", "Hello gammu")  # stored where the profile stores it
    result = gammu(modem, tmp_path, "getallsms")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"+33698765432"' in result.stdout
    assert "Hello gammu" in result.stdout
