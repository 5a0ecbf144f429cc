"""systemd/99-simbridge-modems.rules, evaluated for the devices udev would show it.

ModemManager decides on the USB *device* (usb_device) before it looks at any
port, and drives a modem through QMI/MBIM as well as its ttys, so the
ignore tag must be on the usb_device itself, not only on tty ports
(ModemManager's modem filter documentation; ChromiumOS 51-google-serial.rules).
No udev daemon runs here: a small evaluator of the subset of udev's rule
syntax the file uses (==, !=, =, +=, GOTO, LABEL) walks it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parent.parent / "systemd" / "99-simbridge-modems.rules"
PAIR = re.compile(r'^\s*([A-Z_]+)(?:\{([^}]+)\})?\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*$')


def _value(device: dict[str, str], key: str, attr: str | None) -> str:
    if key in ("ENV",):
        return device.get(f"ENV:{attr}", "")
    if key in ("ATTR", "ATTRS"):
        return device.get(f"ATTR:{attr}", "")
    return device.get(key, "")


def evaluate(device: dict[str, str]) -> dict[str, str]:
    """The ENV keys and SYMLINKs the rules set for ``device``."""
    lines = [line for line in RULES.read_text().splitlines() if line.strip() and not line.startswith("#")]
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r'LABEL="(\w+)"', line))}
    env = dict(device)
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("LABEL="):
            continue
        matched, actions = True, []
        for part in line.split(", "):
            m = PAIR.match(part)
            assert m, f"not understood: {part!r}"
            key, attr, op, value = m.groups()
            if op in ("==", "!="):
                current = _value(env, key, attr)
                hit = any(re.fullmatch(alt.replace("?", ".").replace("*", ".*"), current) is not None
                          for alt in value.split("|"))
                if hit != (op == "=="):
                    matched = False
                    break
            else:
                actions.append((key, attr, op, value))
        if not matched:
            continue
        for key, attr, _op, value in actions:
            if key == "GOTO":
                i = labels[value]
                break
            if key == "ENV":
                env[f"ENV:{attr}"] = value
            elif key == "SYMLINK":
                value = re.sub(r"\$env\{(\w+)\}", lambda m: env.get(f"ENV:{m.group(1)}", ""), value)
                env["SYMLINK"] = (env.get("SYMLINK", "") + " " + value).strip()
            else:
                env[key] = value
    return env


QUECTEL = {"ATTR:idVendor": "2c7c", "ACTION": "add"}


def test_the_whole_usb_device_is_ignored_by_modemmanager():
    out = evaluate({**QUECTEL, "SUBSYSTEM": "usb", "ENV:DEVTYPE": "usb_device"})
    assert out.get("ENV:ID_MM_DEVICE_IGNORE") == "1"


def test_tty_ports_are_ignored_and_named():
    out = evaluate({**QUECTEL, "SUBSYSTEM": "tty", "SUBSYSTEMS": "usb", "ENV:ID_SERIAL_SHORT": "ABC123",
                    "ENV:ID_USB_INTERFACE_NUM": "02"})
    assert out.get("ENV:ID_MM_DEVICE_IGNORE") == "1" and out.get("ENV:ID_MM_PORT_IGNORE") == "1"
    assert out["SYMLINK"] == "simbridge/modem-ABC123-if02"
    assert out["GROUP"] == "dialout" and out["MODE"] == "0660"


@pytest.mark.parametrize("device", [
    {"ATTR:idVendor": "046d", "SUBSYSTEM": "usb", "ENV:DEVTYPE": "usb_device", "ACTION": "add"},  # a mouse
    {**QUECTEL, "SUBSYSTEM": "usb", "ENV:DEVTYPE": "usb_interface"},  # one interface: not the device
    {**QUECTEL, "SUBSYSTEM": "usb", "ENV:DEVTYPE": "usb_device", "ACTION": "remove"},
])
def test_other_devices_are_left_alone(device):
    assert "ENV:ID_MM_DEVICE_IGNORE" not in evaluate(device)


# -- simbridge doctor: who holds the modem's port --------------------------------------------

HOLDER = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: what ps and /proc/PID/comm show
port = open(sys.argv[2], "rb", buffering=0)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(("name", "level"), [("ModemManager", "FAIL"), ("minicom", "warn")])
def test_doctor_names_the_program_holding_the_modem(tmp_path, name, level):
    import subprocess
    import sys
    from types import SimpleNamespace

    from bridge.ops.doctor import check_serial
    from device_agents.modem.virtual import VirtualModem

    with VirtualModem(link=tmp_path / "modem") as modem:
        config = SimpleNamespace(devices=[SimpleNamespace(id="m1", kind="modem", options={"port": str(modem.link)})])
        assert [f.level for f in check_serial(config)] == ["ok"]  # held by this (simbridge's) process only
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, name, str(modem.link)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
            findings = list(check_serial(config))
        finally:
            holder.kill()
            holder.wait(10)
    [finding] = [f for f in findings if f.what == "modem m1"]
    assert finding.level == level and f"pid {holder.pid}" in finding.detail and name in finding.detail
    assert ("99-simbridge-modems.rules" in finding.fix) == (name == "ModemManager")
    if name == "ModemManager":  # and it is running: said once more, for the next modem plugged in
        assert [f.level for f in findings if f.what == "ModemManager"] == ["warn"]
