"""The virtual phone behind the real adb server (Debian's ``adb``): transport, AUTH,
shell v1/v2, sync, forward, reverse, and the shell user's commands."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import adbutils
import pytest
from android_env import ChildAdbServer
from conftest import timeout

from device_agents.android.phone_sim import PhoneThread, VirtualPhone
from device_agents.android.phone_sim.termux import install_termux

pytestmark = pytest.mark.skipif(shutil.which("adb") is None, reason="needs Debian's adb package")
_loopbacks = itertools.count(2)


def next_loopback() -> str:
    n = next(_loopbacks)
    return f"127.{os.getpid() % 200 + 20}.{n // 250}.{n % 250 + 2}"


@pytest.fixture
def adb() -> Iterator[ChildAdbServer]:
    with ChildAdbServer() as server:
        yield server


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[PhoneThread]:
    loop = next_loopback()

    def make() -> VirtualPhone:
        p = VirtualPhone(serial="SIM0001", data_dir=tmp_path / "phone", port=0, loopback=loop)
        install_termux(p)
        return p

    thread = PhoneThread(make)
    yield thread
    thread.close()


def attach(adb: ChildAdbServer, phone: PhoneThread) -> str:
    """adb connect, then tap Allow on the phone: the serial, online."""
    serial = phone.phone.address
    out = adb.run("connect", serial).stdout
    assert serial in out
    adb.wait_state(serial, "unauthorized", within=timeout(20))
    assert len(phone.call(phone.phone.usb_debugging_dialog(timeout(20)))) == 1
    assert phone.do(phone.phone.allow_usb_debugging) == 1
    adb.wait_state(serial, "device", within=timeout(20))
    return serial


def test_unknown_key_is_unauthorized_until_the_user_allows_then_remembered(adb: ChildAdbServer,
                                                                            phone: PhoneThread) -> None:
    serial = phone.phone.address
    adb.run("connect", serial)
    adb.wait_state(serial, "unauthorized", within=timeout(20))
    shell = adb.run("-s", serial, "shell", "true")
    assert shell.returncode != 0 and "unauthorized" in shell.stderr
    phone.call(phone.phone.usb_debugging_dialog(timeout(20)))  # the dialog is up on the phone
    assert phone.do(phone.phone.allow_usb_debugging) == 1
    adb.wait_state(serial, "device", within=timeout(20))
    long = adb.run("devices", "-l").stdout
    assert re.search(rf"{re.escape(serial)}\s+device product:panther model:Pixel_7 device:panther", long)
    # "Always allow from this computer": the next connection is let in without a dialog.
    adb.run("disconnect", serial)
    adb.wait_state(serial, "", within=timeout(20))
    adb.run("connect", serial)
    adb.wait_state(serial, "device", within=timeout(20))
    assert not phone.phone.auth.pending


def test_denied_key_stays_unauthorized(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = phone.phone.address
    adb.run("connect", serial)
    adb.wait_state(serial, "unauthorized", within=timeout(20))
    phone.call(phone.phone.usb_debugging_dialog(timeout(20)))
    assert phone.do(phone.phone.deny_usb_debugging) == 1
    assert adb.state(serial) == "unauthorized"
    assert "unauthorized" in adb.run("-s", serial, "shell", "true").stderr


def test_shell_v2_exit_codes_stdout_and_stderr(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = attach(adb, phone)
    r = adb.run("-s", serial, "shell", "getprop ro.build.version.sdk; nosuch-cmd; exit 3")
    assert r.returncode == 3
    assert r.stdout == "34\n"
    assert r.stderr == "/system/bin/sh: nosuch-cmd: inaccessible or not found\n"
    r = adb.run("-s", serial, "shell", "termux-sms-list")  # not on the shell user's PATH
    assert r.returncode == 127
    # adbutils against the real server: v2 when the banner says shell_v2, v1 otherwise.
    client = adbutils.AdbClient(host="127.0.0.1", port=adb.port)
    device = client.device(serial)
    v2 = device.shell2("echo out; echo err >&2; exit 5", v2=True)
    assert (v2.returncode, v2.stdout, v2.stderr) == (5, "out\n", "err\n")
    v1 = device.shell2("pm path com.nope")
    assert v1.returncode == 1 and v1.output == ""
    assert device.shell("getprop ro.serialno") == "SIM0001"


def test_push_pull_and_the_shell_users_file_rights(adb: ChildAdbServer, phone: PhoneThread, tmp_path: Path) -> None:
    serial = attach(adb, phone)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(300_000))  # several DATA chunks and several WRTE messages
    r = adb.run("-s", serial, "push", str(blob), "/sdcard/Download/blob.bin")
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.bin"
    r = adb.run("-s", serial, "pull", "/sdcard/Download/blob.bin", str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == blob.read_bytes()
    assert (phone.phone.files.local("/sdcard/Download/blob.bin")).read_bytes() == blob.read_bytes()
    r = adb.run("-s", serial, "push", str(blob), "/data/data/com.termux/files/home/x")
    assert r.returncode != 0 and "remote couldn't create file: Permission denied" in r.stdout + r.stderr
    r = adb.run("-s", serial, "pull", "/sdcard/nothing-here", str(tmp_path / "n"))
    assert r.returncode != 0 and "remote object '/sdcard/nothing-here' does not exist" in r.stdout + r.stderr
    client = adbutils.AdbClient(host="127.0.0.1", port=adb.port)
    device = client.device(serial)
    device.sync.push(b"agent code", "/data/local/tmp/agent.py")
    assert device.sync.read_bytes("/data/local/tmp/agent.py") == b"agent code"


def _echo_server(host: str, prefix: bytes, expect: int = 5) -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket()
    srv.bind((host, 0))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while len(data) < expect:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
            conn.sendall(prefix + data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_forward_reaches_the_phones_own_loopback(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = attach(adb, phone)
    srv, t = _echo_server(phone.phone.loopback, b"phone:")  # an app listening on the phone's 127.0.0.1
    port = srv.getsockname()[1]
    host_port = int(adb.run("-s", serial, "forward", "tcp:0", f"tcp:{port}", check=True).stdout.strip())
    with socket.create_connection(("127.0.0.1", host_port), timeout=timeout(10)) as c:
        c.sendall(b"hello")
        assert c.recv(100) == b"phone:hello"
    t.join(timeout(10))
    srv.close()


def test_reverse_carries_bytes_both_ways_and_follows_adbd_rules(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = attach(adb, phone)
    srv, t = _echo_server("127.0.0.1", b"host:", expect=20000)  # the bridge, on the host's 127.0.0.1
    host_port = srv.getsockname()[1]
    device_port = int(adb.run("-s", serial, "reverse", "tcp:0", f"tcp:{host_port}", check=True).stdout.strip())
    listing = adb.run("-s", serial, "reverse", "--list").stdout
    assert f"tcp:{device_port} tcp:{host_port}" in listing
    # An app on the phone connects to its own 127.0.0.1:device_port.
    with socket.create_connection((phone.phone.loopback, device_port), timeout=timeout(10)) as c:
        c.sendall(b"ping" * 5000)
        got = b""
        while len(got) < 5 + 20000:
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        assert got == b"host:" + b"ping" * 5000
    t.join(timeout(10))
    srv.close()
    r = adb.run("-s", serial, "reverse", "--no-rebind", f"tcp:{device_port}", "tcp:1")
    assert r.returncode != 0 and "cannot rebind existing socket" in r.stderr
    r = adb.run("-s", serial, "reverse", "--remove", "tcp:1")
    assert r.returncode != 0 and "listener 'tcp:1' not found" in r.stderr
    adb.run("-s", serial, "reverse", "--remove-all", check=True)
    assert adb.run("-s", serial, "reverse", "--list").stdout.strip() == ""
    client = adbutils.AdbClient(host="127.0.0.1", port=adb.port)
    client.device(serial).reverse("tcp:18765", "tcp:8765")
    assert [(r.remote, r.local) for r in client.device(serial).reverse_list()] == [("tcp:18765", "tcp:8765")]


@pytest.mark.parametrize(("command", "code", "stdout", "stderr"), [
    # PermissionManagerServiceImpl: Termux:API's manifest does not request RECEIVE_SMS.
    ("pm grant com.termux.api android.permission.RECEIVE_SMS", 255, "",
     "java.lang.SecurityException: Package com.termux.api has not requested permission "
     "android.permission.RECEIVE_SMS"),
    ("pm grant com.termux android.permission.INTERNET", 255, "",
     "java.lang.SecurityException: Permission android.permission.INTERNET requested by com.termux "
     "is not a changeable permission type"),
    ("pm grant com.nobody android.permission.READ_SMS", 255, "",
     "java.lang.IllegalArgumentException: Unknown package: com.nobody"),
    ("pm grant com.termux.api android.permission.READ_SMS", 0, "", ""),
    # termux-app AndroidManifest.xml / termux-app#1974: the shell lacks RUN_COMMAND.
    ("am startservice -n com.termux/.app.RunCommandService --es com.termux.RUN_COMMAND_PATH x", 255,
     "Starting service: Intent { cmp=com.termux/.app.RunCommandService (has extras) }",
     "Error: Requires permission com.termux.permission.RUN_COMMAND"),
    ("am start-foreground-service -n com.termux/.app.RunCommandService", 255, "Starting service:",
     "Error: Requires permission com.termux.permission.RUN_COMMAND"),
    ("am start -a android.intent.action.CALL -d tel:+33612345678", 0,
     "Starting: Intent { act=android.intent.action.CALL dat=tel:xxxxxxxxxxxx }", ""),
    ("run-as com.termux id", 1, "", "run-as: package not debuggable: com.termux"),
    ("termux-sms-send -n 1 x", 127, "", "/system/bin/sh: termux-sms-send: inaccessible or not found"),
    ("pm list packages termux", 0, "package:com.termux\npackage:com.termux.api", ""),
    ("settings get global sms_outgoing_check_max_count", 0, "null", ""),
    ("device_config put activity_manager max_phantom_processes 2147483647 && "
     "device_config get activity_manager max_phantom_processes", 0, "2147483647", ""),
    ("dumpsys deviceidle whitelist +com.termux", 0, "Added: com.termux", ""),
    ("setprop persist.sys.timezone UTC", 1, "", "Failed to set property 'persist.sys.timezone' to 'UTC'."),
    ("getprop persist.sys.timezone", 0, "Europe/Paris", ""),
])
def test_shell_rules_as_android_answers(adb: ChildAdbServer, phone: PhoneThread, command: str, code: int,
                                        stdout: str, stderr: str) -> None:
    serial = attach(adb, phone)
    r = adb.run("-s", serial, "shell", command)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert stdout in r.stdout
    assert stderr in r.stderr
    if not stderr:
        assert r.stderr == ""


def test_grants_show_in_dumpsys_and_click_to_call_is_placed(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = attach(adb, phone)
    dump = adb.run("-s", serial, "shell", "dumpsys package com.termux.api").stdout
    assert "android.permission.READ_SMS: granted=false" in dump
    adb.run("-s", serial, "shell", "pm grant com.termux.api android.permission.READ_SMS", check=True)
    dump = adb.run("-s", serial, "shell", "dumpsys package com.termux.api").stdout
    assert "android.permission.READ_SMS: granted=true" in dump
    adb.run("-s", serial, "shell", "am start -a android.intent.action.CALL -d tel:+33612345678", check=True)
    assert phone.phone.calls_placed == ["+33612345678"]
    assert phone.phone.state.calls[-1]["type"] == 2  # outgoing, in the call log


def test_content_query_rows_in_android_format(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = attach(adb, phone)
    r = adb.run("-s", serial, "shell", "content query --uri content://sms/inbox")
    assert r.stdout == "No result found.\n"
    first = phone.do(lambda: phone.phone.receive_sms("+33612345678", "Bonjour, ça va ?", date_ms=1_700_000_000_000))
    phone.do(lambda: phone.phone.receive_sms("+33699999999", "second", date_ms=1_700_000_100_000))
    phone.do(lambda: phone.phone.receive_call("+33611111111", date_ms=1_700_000_200_000))
    r = adb.run("-s", serial, "shell", "content query --uri content://sms/inbox "
                "--projection _id:address:date:type:body --sort '_id ASC'")
    assert r.stdout == (
        f"Row: 0 _id={first['_id']}, address=+33612345678, date=1700000000000, type=1, body=Bonjour, ça va ?\n"
        f"Row: 1 _id={first['_id'] + 1}, address=+33699999999, date=1700000100000, type=1, body=second\n")
    r = adb.run("-s", serial, "shell", "content query --uri content://sms --projection _id:subject "
                f"--where \"_id>{first['_id']}\"")
    assert r.stdout == f"Row: 0 _id={first['_id'] + 1}, subject=NULL\n"
    r = adb.run("-s", serial, "shell", "content query --uri content://call_log/calls "
                "--projection number:date:duration:type")
    assert r.stdout == "Row: 0 number=+33611111111, date=1700000200000, duration=0, type=3\n"
    r = adb.run("-s", serial, "shell", "content query --uri content://sms/sent")
    assert r.stdout == "No result found.\n"
    r = adb.run("-s", serial, "shell", "content query --uri content://sms --where 'nosuch=1'")
    assert "Error while accessing provider:sms" in r.stderr and "no such column: nosuch" in r.stderr
    r = adb.run("-s", serial, "shell", "content query --uri content://nowhere/x")
    assert "Could not find provider: nowhere" in r.stderr


def test_unplug_goes_offline_and_replug_comes_back(adb: ChildAdbServer, phone: PhoneThread) -> None:
    serial = attach(adb, phone)
    phone.call(phone.phone.unplug())
    r = adb.run("-s", serial, "shell", "true")
    assert r.returncode != 0
    assert adb.state(serial) in ("offline", "")
    phone.call(phone.phone.replug())
    # The adb server reconnects to devices it was told to `adb connect` to.
    adb.run("connect", serial)
    adb.wait_state(serial, "device", within=timeout(30))
    assert adb.run("-s", serial, "shell", "echo back").stdout == "back\n"


def test_simbridge_phone_sim_command(adb: ChildAdbServer, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = next_loopback()
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "phone-sim", "--port", str(port),
                             "--data", str(tmp_path / "p"), "--loopback", loop, "--allow-usb-debugging"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == f"phone-sim: adb connect 127.0.0.1:{port}", (line, proc.stderr)
        serial = f"127.0.0.1:{port}"
        adb.run("connect", serial)
        adb.wait_state(serial, "device", within=timeout(20))
        control = str(tmp_path / "p" / "control.sock")
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(control)
            c.sendall(b'{"op": "receive_sms", "from": "+33600000000", "text": "hi"}\n')
            assert b'"ok": true' in c.recv(1 << 16)
        r = adb.run("-s", serial, "shell", "content query --uri content://sms/inbox --projection address:body")
        assert r.stdout == "Row: 0 address=+33600000000, body=hi\n"
        r = adb.run("-s", serial, "shell", "pm list packages -3")
        assert r.stdout.split() == ["package:com.termux", "package:com.termux.api", "package:me.capcom.smsgateway"]
    finally:
        proc.terminate()
        proc.wait(timeout(20))
