"""The virtual phone's helper apps, reached as the bridge reaches them: SMSGate's HTTP API
through ``adb forward``, its webhooks back through ``adb reverse``, Termux:API's commands
typed in Termux, and Android's SMS send limit."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from android_env import ChildAdbServer
from conftest import timeout
from test_phone_sim import attach, next_loopback

from device_agents.android.phone_sim import PhoneThread, VirtualPhone
from device_agents.android.phone_sim.smsgate import SmsGateApp
from device_agents.android.phone_sim.termux import TermuxApiApp, TermuxApp, install_termux
from device_agents.modem.gsm7 import segment_count

pytestmark = pytest.mark.skipif(shutil.which("adb") is None, reason="needs Debian's adb package")
GATE = "me.capcom.smsgateway"


class Phone:
    def __init__(self, thread: PhoneThread, gate: SmsGateApp, term: TermuxApp, api: TermuxApiApp) -> None:
        self.thread, self.gate, self.term, self.api = thread, gate, term, api
        self.phone = thread.phone


@pytest.fixture
def adb() -> Iterator[ChildAdbServer]:
    with ChildAdbServer() as server:
        yield server


@pytest.fixture
def ph(tmp_path: Path) -> Iterator[Phone]:
    loop = next_loopback()
    parts: dict[str, Any] = {}

    def make() -> VirtualPhone:
        p = VirtualPhone(serial="SIM0002", data_dir=tmp_path / "phone", port=0, loopback=loop)
        parts["gate"] = SmsGateApp(p, webhook_backoff=0.05)
        p.install(parts["gate"])
        parts["term"], parts["api"] = install_termux(p)
        return p

    thread = PhoneThread(make)
    yield Phone(thread, parts["gate"], parts["term"], parts["api"])
    thread.close()


class Receiver:
    """The bridge's webhook endpoint on the host's 127.0.0.1."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.cond:
                    outer.posts.append({"json": json.loads(body), "raw": body, "headers": dict(self.headers)})
                    outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, event: str, n: int = 1) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout(15)
        with self.cond:
            while True:
                got = [p["json"] for p in self.posts if p["json"]["event"] == event]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} webhook; got {[p['json']['event'] for p in self.posts]}")
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def http(port: int, method: str, path: str, body: Any = None, *, user: str = "sms",
         password: str | None = None, raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    if password is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout(10)) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text else None, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, json.loads(text) if text else None, dict(exc.headers)


def forward(adb: ChildAdbServer, serial: str, device_port: int) -> int:
    return int(adb.run("-s", serial, "forward", "tcp:0", f"tcp:{device_port}", check=True).stdout.strip())


def set_up_smsgate(adb: ChildAdbServer, ph: Phone, serial: str) -> tuple[int, str]:
    """What the person does once on the phone, then the bridge's grants over ADB."""
    for perm in ("SEND_SMS", "RECEIVE_SMS", "READ_SMS", "READ_PHONE_STATE"):
        adb.run("-s", serial, "shell", f"pm grant {GATE} android.permission.{perm}", check=True)
    ph.thread.call(ph.gate.user_enable_local_server())
    return forward(adb, serial, 8080), ph.gate.screen()["password"]


def test_smsgate_set_up_steps_are_visible_over_adb(adb: ChildAdbServer, ph: Phone) -> None:
    serial = attach(adb, ph.thread)
    dump = adb.run("-s", serial, "shell", f"dumpsys package {GATE}").stdout
    assert "android.permission.SEND_SMS: granted=false" in dump
    assert "WebService" not in adb.run("-s", serial, "shell", f"dumpsys activity services {GATE}").stdout
    port = forward(adb, serial, 8080)
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # nothing listens on the phone yet
        http(port, "GET", "/health")
    # RECEIVE_SMS is requested by SMSGate's manifest, so the shell may grant it.
    r = adb.run("-s", serial, "shell", f"pm grant {GATE} android.permission.RECEIVE_SMS")
    assert r.returncode == 0, r.stderr
    ph.thread.call(ph.gate.user_enable_local_server())
    assert f"{GATE}/.modules.localserver.WebService" in adb.run(
        "-s", serial, "shell", f"dumpsys activity services {GATE}").stdout
    status, body, _ = http(port, "GET", "/health")
    assert status == 200 and body["status"] == "pass"
    assert adb.run("-s", serial, "shell", f"dumpsys deviceidle whitelist +{GATE}").stdout == f"Added: {GATE}\n"
    assert f"user,{GATE}," in adb.run("-s", serial, "shell", "dumpsys deviceidle whitelist").stdout


def test_smsgate_send_delivered_and_incoming_with_webhooks_through_reverse(
        adb: ChildAdbServer, ph: Phone, receiver: Receiver) -> None:
    serial = attach(adb, ph.thread)
    port, password = set_up_smsgate(adb, ph, serial)
    device_port = int(adb.run("-s", serial, "reverse", "tcp:0", f"tcp:{receiver.port}", check=True).stdout)
    for event in ("sms:sent", "sms:delivered", "sms:failed", "sms:received"):
        status, hook, _ = http(port, "POST", "/webhooks", {"url": f"http://127.0.0.1:{device_port}/hook",
                                                            "event": event}, password=password)
        assert status == 201 and hook["event"] == event and hook["id"]
    status, listed, _ = http(port, "GET", "/webhooks", password=password)
    assert status == 200 and len(listed) == 4
    long_text = "Rendez-vous confirmé demain à 10h. " * 6  # several parts
    parts = segment_count(long_text).parts
    assert parts > 1
    status, msg, _ = http(port, "POST", "/messages", {"textMessage": {"text": long_text},
                                                       "phoneNumbers": ["+33612345678"], "simNumber": 1},
                          password=password)
    assert status == 202
    assert msg["state"] == "Pending" and msg["recipients"] == [
        {"phoneNumber": "+33612345678", "state": "Pending", "error": None}]
    sent = receiver.wait("sms:sent")[0]
    assert sent["payload"]["messageId"] == msg["id"] and sent["payload"]["partsCount"] == parts
    assert sent["deviceId"] == ph.gate.screen()["device_id"]
    delivered = receiver.wait("sms:delivered")[0]
    assert delivered["payload"]["phoneNumber"] == "+33612345678"
    status, now, _ = http(port, "GET", f"/message/{msg['id']}", password=password)
    assert status == 200 and now["state"] == "Delivered"
    assert list(now["states"]) == ["Pending", "Processed", "Sent", "Delivered"]
    # The framework wrote it to the provider for this non-default SMS app.
    rows = adb.run("-s", serial, "shell", "content query --uri content://sms/sent "
                   "--projection address:status:type:creator").stdout
    assert rows == f"Row: 0 address=+33612345678, status=0, type=2, creator={GATE}\n"
    ph.thread.do(lambda: ph.phone.receive_sms("+33699999999", "STOP"))
    received = receiver.wait("sms:received")[0]
    assert received["payload"]["message"] == "STOP" and received["payload"]["phoneNumber"] == "+33699999999"
    post = next(p for p in receiver.posts if p["json"]["event"] == "sms:received")
    expected = hmac.new(ph.gate.screen()["signing_key"].encode(),
                        post["raw"] + post["headers"]["X-Timestamp"].encode(), hashlib.sha256).hexdigest()
    assert post["headers"]["X-Signature"] == expected


def test_smsgate_failure_answers(adb: ChildAdbServer, ph: Phone) -> None:
    serial = attach(adb, ph.thread)
    port, password = set_up_smsgate(adb, ph, serial)
    status, _, headers = http(port, "POST", "/message", {"message": "x", "phoneNumbers": ["+331"]},
                              password="wrong")
    assert status == 401 and 'realm="Access to SMS Gateway"' in headers["WWW-Authenticate"]
    assert http(port, "GET", "/message/abc")[0] == 401
    cases = [
        ({"phoneNumbers": ["+331"]}, "Must specify exactly one of: textMessage, dataMessage, or message"),
        ({"message": "x", "textMessage": {"text": "y"}, "phoneNumbers": ["+331"]},
         "Cannot specify multiple message types simultaneously"),
        ({"message": "", "phoneNumbers": ["+331"]}, "Text message is empty"),
        ({"message": "x", "phoneNumbers": []}, "phoneNumbers is empty"),
        ({"message": "x", "phoneNumbers": ["+331"], "simNumber": 0}, "simNumber must be >= 1"),
    ]
    for body, text in cases:
        status, answer, _ = http(port, "POST", "/message", body, password=password)
        assert (status, answer) == (400, {"message": text}), body
    status, answer, _ = http(port, "POST", "/message", raw=b"{not json", password=password)
    assert status == 400 and "PostMessageRequest" in answer["message"]
    assert http(port, "GET", "/message/nope", password=password)[0] == 404
    for url, event in (("http://example.com/hook", "sms:sent"), ("https://10.0.0.7/hook", "sms:sent"),
                       ("http://127.0.0.1:9/hook", "sms:nothing")):
        status, answer, _ = http(port, "POST", "/webhooks", {"url": url, "event": event}, password=password)
        assert status == 400, url
    # No SEND_SMS: the message fails with the framework's SecurityException text.
    adb.run("-s", serial, "shell", f"pm revoke {GATE} android.permission.SEND_SMS", check=True)
    status, msg, _ = http(port, "POST", "/message", {"message": "x", "phoneNumbers": ["+331"]}, password=password)
    deadline = time.monotonic() + timeout(10)
    while http(port, "GET", f"/message/{msg['id']}", password=password)[1]["state"] != "Failed":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    got = http(port, "GET", f"/message/{msg['id']}", password=password)[1]
    assert got["recipients"][0]["error"].endswith("nor current process has android.permission.SEND_SMS.")


def _state(port: int, password: str, ident: str) -> dict[str, Any]:
    return http(port, "GET", f"/message/{ident}", password=password)[1]


def _wait_state(port: int, password: str, ident: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout(10)
    while True:
        got = _state(port, password, ident)
        if got["state"] == wanted:
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.02)


def test_android_send_limit_counts_parts_per_app_holds_five_and_fails_the_sixth(adb: ChildAdbServer, ph: Phone) -> None:
    serial = attach(adb, ph.thread)
    port, password = set_up_smsgate(adb, ph, serial)
    # SmsUsageMonitor reads sms_outgoing_check_max_count at boot only.
    adb.run("-s", serial, "shell", "settings put global sms_outgoing_check_max_count 3", check=True)
    assert ph.phone.sms.max_count == 30
    ph.thread.call(ph.phone.reboot())
    assert ph.phone.sms.max_count == 3
    adb.run("connect", serial)
    adb.wait_state(serial, "device", within=timeout(30))
    port = forward(adb, serial, 8080)

    def send(text: str) -> str:
        status, msg, _ = http(port, "POST", "/message", {"message": text, "phoneNumbers": ["+33611"]},
                              password=password)
        assert status == 202
        return str(msg["id"])

    first = send("x" * 200)  # 2 parts: within 3
    _wait_state(port, password, first, "Delivered")
    long = send("y" * 200)  # 2 more parts would make 4 > 3: behind the dialog
    _wait_state(port, password, send("one part"), "Delivered")  # 2 + 1 = 3: still allowed
    held = [long] + [send(f"short {i}") for i in range(4)]  # the dialog's queue holds 5 in all
    for ident in held:
        assert _state(port, password, ident)["state"] == "Processed"
    sixth = send("one too many")
    failed = _wait_state(port, password, sixth, "Failed")
    assert failed["recipients"][0]["error"] == "Send result: RESULT_ERROR_LIMIT_EXCEEDED"
    # Termux:API is another app: its own count.
    assert len(ph.phone.sms.waiting) == 5
    assert ph.thread.do(lambda: ph.phone.sms.answer_dialog(True)) == 5
    for ident in held:
        _wait_state(port, password, ident, "Delivered")


def test_termux_api_permission_errors_then_grants_and_no_delivery_reports(adb: ChildAdbServer, ph: Phone) -> None:
    serial = attach(adb, ph.thread)
    ph.thread.do(lambda: ph.phone.receive_sms("+33612345678", "salut"))
    code, out, err = ph.thread.call(ph.term.type_command("termux-sms-list -l 5"))
    assert code == 0 and json.loads(out) == {"error": "Please grant the following permissions to use this "
                                             "command: android.permission.READ_SMS ,android.permission.READ_CONTACTS"}
    assert out.startswith('{\n  "error": "Please grant')
    code, out, _ = ph.thread.call(ph.term.type_command("termux-telephony-cellinfo"))
    assert json.loads(out)["error"].endswith("android.permission.ACCESS_COARSE_LOCATION")
    code, out, _ = ph.thread.call(ph.term.type_command("termux-battery-status"))
    assert json.loads(out)["percentage"] == 81  # no permission needed
    assert ph.api.screen()["permission_dialogs"]  # the dialogs opened on the phone
    adb.run("-s", serial, "shell", "pm grant com.termux.api android.permission.SEND_SMS", check=True)
    code, out, _ = ph.thread.call(ph.term.type_command("termux-sms-send -n +33698765432 bonjour"))
    assert json.loads(out)["error"].endswith(": android.permission.READ_PHONE_STATE")
    assert ph.phone.state.radio_log == []  # nothing went out
    for perm in ("READ_SMS", "READ_CONTACTS", "READ_PHONE_STATE", "ACCESS_COARSE_LOCATION"):
        adb.run("-s", serial, "shell", f"pm grant com.termux.api android.permission.{perm}", check=True)
    code, out, _ = ph.thread.call(ph.term.type_command("termux-sms-list -l 5"))
    rows = json.loads(out)
    assert [(r["address"], r["body"], r["type"]) for r in rows] == [("+33612345678", "salut", "inbox")]
    code, out, err = ph.thread.call(ph.term.type_command("termux-sms-send -n +33698765432 bonjour"))
    assert (code, out, err) == (0, "", "")
    log = ph.phone.state.radio_log[-1]
    assert log["app"] == "com.termux.api" and log["status_report_requested"] is False
    sent = adb.run("-s", serial, "shell", "content query --uri content://sms/sent --projection address:status").stdout
    assert sent == "Row: 0 address=+33698765432, status=-1\n"  # no status report asked: none will come


def test_termux_process_reaches_the_bridge_through_adb_reverse(adb: ChildAdbServer, ph: Phone) -> None:
    serial = attach(adb, ph.thread)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    host_port = srv.getsockname()[1]
    adb.run("-s", serial, "reverse", "tcp:18765", f"tcp:{host_port}", check=True)
    script = ("python3 -c \"import socket; c = socket.create_connection(('127.0.0.1', 18765)); "
              "c.sendall(b'hello from termux'); print(c.recv(100).decode())\"")

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"bridge:" + conn.recv(100))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    code, out, err = ph.thread.call(ph.term.type_command(script))
    assert (code, out) == (0, "bridge:hello from termux\n"), err
    t.join(timeout(10))
    srv.close()


def test_phantom_process_killer_and_run_command_refusal(adb: ChildAdbServer, ph: Phone) -> None:
    serial = attach(adb, ph.thread)
    assert ph.term.phantom_killer_active()
    adb.run("-s", serial, "shell", "settings put global settings_enable_monitor_phantom_procs false", check=True)
    assert not ph.term.phantom_killer_active()
    r = adb.run("-s", serial, "shell", "am startservice -n com.termux/com.termux.app.RunCommandService")
    assert r.returncode == 255 and "Requires permission com.termux.permission.RUN_COMMAND" in r.stderr
    code, out, _ = ph.thread.call(ph.term.type_command(
        "termux-job-scheduler --job-id 1 -s ~/agent.sh --period-ms 900000 --persisted true"))
    assert code == 0 and ph.api.jobs["1"]["persisted"] is True


def test_persisted_job_and_termux_boot_script_survive_a_reboot(tmp_path: Path) -> None:
    loop = next_loopback()
    parts: dict[str, Any] = {}

    def make() -> VirtualPhone:
        p = VirtualPhone(serial="SIM0003", data_dir=tmp_path / "phone", port=0, loopback=loop, require_auth=False)
        parts["term"], parts["api"] = install_termux(p, boot_addon=True)
        return p

    thread = PhoneThread(make)
    term: TermuxApp = parts["term"]
    api: TermuxApiApp = parts["api"]
    try:
        marker = tmp_path / "ran"
        boot_dir = term.home / ".termux" / "boot"
        boot_dir.mkdir(parents=True)
        (boot_dir / "start-agent").write_text(f"#!/bin/sh\necho boot >> {marker}\n")
        (boot_dir / "start-agent").chmod(0o755)
        (term.home / "job.sh").write_text(f"#!/bin/sh\necho job >> {marker}\n")
        (term.home / "job.sh").chmod(0o755)
        for line in ("termux-job-scheduler --job-id 1 -s ~/job.sh --period-ms 900000 --persisted true",
                     "termux-job-scheduler --job-id 2 -s ~/job.sh --period-ms 900000"):
            assert thread.call(term.type_command(line))[0] == 0
        assert set(api.jobs) == {"1", "2"}
        thread.call(thread.phone.reboot())
        assert set(api.jobs) == {"1"}  # only the persisted job is still scheduled
        assert thread.call(api.run_jobs()) == 1

        def lines() -> list[str]:
            return marker.read_text().split() if marker.exists() else []

        deadline = time.monotonic() + timeout(10)
        while sorted(lines()) != ["boot", "job"]:
            assert time.monotonic() < deadline, lines()
            time.sleep(0.02)
    finally:
        thread.close()


def test_smsgate_retries_a_webhook_until_adb_reverse_is_back(adb: ChildAdbServer, ph: Phone, receiver: Receiver) -> None:
    serial = attach(adb, ph.thread)
    port, password = set_up_smsgate(adb, ph, serial)
    with socket.socket() as s:  # a port on the phone's loopback that nothing listens on yet
        s.bind((ph.phone.loopback, 0))
        device_port = s.getsockname()[1]
    status, _, _ = http(port, "POST", "/webhooks", {"url": f"http://127.0.0.1:{device_port}/hook",
                                                     "event": "sms:received"}, password=password)
    assert status == 201
    ph.thread.do(lambda: ph.phone.receive_sms("+33612345678", "while the cable was out"))
    deadline = time.monotonic() + timeout(10)
    while len(ph.gate.webhooks.webhook_log) < 2:  # refused, then refused again after a back-off
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert all(not isinstance(a["status"], int) for a in ph.gate.webhooks.webhook_log)
    adb.run("-s", serial, "reverse", f"tcp:{device_port}", f"tcp:{receiver.port}", check=True)
    got = receiver.wait("sms:received")
    assert [g["payload"]["message"] for g in got] == ["while the cable was out"]
