"""bridge/android.py against the tests' own adb server (real adb host protocol,
adbutils unchanged), with the agent started for real when the RUN_COMMAND
intent comes, fake termux-* commands behind it, and a websocket stand-in for
the bridge's agent listener."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes.adb_server import BASE_PACKAGES, FakeAdbServer
from fakes.mini_bridge import MiniBridge, wait_until

from bridge.devices.android import (
    ABSENT,
    ERROR,
    NEEDS_USER,
    ONLINE,
    PERMISSIONS,
    STARTING,
    AndroidSupervisor,
    DialError,
)
from device_agents import protocol
from device_agents.android.build import build_archive

SERIAL = "R58M123ABC"
DEVICE = "phone-1"
TOKEN = "secret-phone-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_archive(tmp_path_factory.mktemp("archive") / "simbridge-agent.pyz")


@pytest.fixture
def adb(tmp_path: Path):
    server = FakeAdbServer(tmp_path / "adb")
    server.start()
    yield server
    server.close()


@pytest.fixture
async def bridge():
    async with MiniBridge(tokens={DEVICE: TOKEN, "phone-2": "secret-phone-2"}) as b:
        yield b


@pytest.fixture
async def supervisor(adb, bridge, archive):
    devices = [SimpleNamespace(id=DEVICE, kind="android", account="a@example.com",
                               options={"serial": SERIAL}),
               SimpleNamespace(id="sim-1", kind="virtual", account="a@example.com", options={})]
    sup = AndroidSupervisor(
        devices=devices, token_for=lambda d: {DEVICE: TOKEN}.get(d, "x"), agent_port=bridge.port,
        adb_port=adb.port, device_port=free_port(), archive_builder=lambda: archive,
        start_adb_server=False, connect_timeout=20, backoff_max=0.3,
        agent_options={"poll_interval": 0.05, "status_interval": 0.5, "backoff_max": 0.2,
                       "confirm_timeout": 5})
    bridge.on_session = sup.agent_connected
    task = asyncio.create_task(sup.run())
    yield sup
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def state(sup: AndroidSupervisor) -> str:
    return sup.states()[DEVICE].state


async def test_plug_setup_send_receive_unplug_replug(adb, bridge, supervisor):
    assert state(supervisor) == ABSENT
    phone = adb.add_phone(SERIAL, timezone="Europe/Paris")
    await wait_until(lambda: state(supervisor) == ONLINE, 20, "phone online")
    assert bridge.connected(DEVICE)
    # The set-up did what it says.
    for name in PERMISSIONS:
        assert f"pm grant com.termux.api android.permission.{name}" in phone.shell_log
    assert list(phone.reverses.values()) == [f"tcp:{bridge.port}"]
    path, argv = phone.run_commands[-1]
    assert path == "/data/data/com.termux/files/usr/bin/python"
    assert argv == ["/data/local/tmp/simbridge/simbridge-agent.pyz", "--config",
                    f"/data/local/tmp/simbridge/{DEVICE}.json", "--device", DEVICE]
    assert bridge.hellos[-1].timezone == "Europe/Paris"
    # The pushed config (it holds the token) is removed once the agent has its own copy.
    await wait_until(lambda: not phone.path(f"/data/local/tmp/simbridge/{DEVICE}.json").exists(),
                     what="pushed config removed")

    # Send, and things come in.
    await bridge.push(DEVICE, protocol.SendSms(job_id="j1", to="+33612345678", text="Hello"))
    await wait_until(lambda: bridge.job_states("j1") == ["sent"], what="sent")
    phone.termux.receive_sms("+33699999999", "Réponse")
    phone.termux.add_call("+33688888888", "MISSED")
    await wait_until(lambda: bridge.of_kind(protocol.SmsReceived) and bridge.of_kind(protocol.CallEvent),
                     what="incoming sms and missed call")

    # Unplugged: the link through adb reverse breaks, the phone shows as absent.
    adb.unplug(SERIAL)
    await wait_until(lambda: state(supervisor) == ABSENT and not bridge.connected(DEVICE),
                     what="offline")
    phone.termux.receive_sms("+33677777777", "while unplugged")

    # Replugged: online again with nothing for the user to do; the agent that
    # kept running on the phone is the one that reconnects.
    adb.plug(SERIAL)
    await wait_until(lambda: state(supervisor) == ONLINE and bridge.connected(DEVICE), 20, "online again")
    await wait_until(lambda: len(bridge.of_kind(protocol.SmsReceived)) == 2, what="sms from while away")
    await wait_until(lambda: len(phone.run_commands) == 2, what="agent started again (a no-op)")
    await wait_until(lambda: len(phone.processes) == 2 and len(phone.agents_running()) == 1,
                     what="second start exits")
    assert phone.processes[1].returncode == 0 and phone.processes[0].returncode is None
    ids = [e.event_id for e in bridge.events]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert [s["text"] for s in phone.termux.sends()] == ["Hello"]
    calls = bridge.of_kind(protocol.CallEvent)
    assert [(c.direction, c.number) for c in calls] == [("missed", "+33688888888")]

    # Click-to-call through adb; the agent reports the outgoing call from the call log.
    await supervisor.dial(DEVICE, "+33611223344")
    assert phone.calls_placed == ["+33611223344"]
    await wait_until(lambda: any(c.direction == "outgoing" for c in bridge.of_kind(protocol.CallEvent)),
                     what="outgoing call reported")


async def test_unknown_phone_is_listed_and_left_alone(adb, supervisor):
    other = adb.add_phone("ZY22ABCDEF", run_agents=False, loopback="127.0.0.2")
    await wait_until(lambda: supervisor.unconfigured() == ["ZY22ABCDEF"], what="unconfigured listed")
    assert other.shell_log == [] and other.reverses == {}
    assert state(supervisor) == ABSENT
    adb.unplug("ZY22ABCDEF")
    await wait_until(lambda: supervisor.unconfigured() == [], what="gone")


async def test_each_blocked_step_says_what_to_do_and_resumes_by_itself(adb, supervisor):
    phone = adb.add_phone(SERIAL, state="unauthorized", run_agents=False,
                          packages=set(BASE_PACKAGES), allow_external_apps=False)
    await wait_until(lambda: state(supervisor) == NEEDS_USER, what="needs user")
    setup = supervisor.states()[DEVICE]
    assert setup.step == "authorised" and "Allow USB debugging" in setup.reason

    adb.set_state(SERIAL, "device")  # the user tapped Allow
    await wait_until(lambda: supervisor.states()[DEVICE].step == "termux" and state(supervisor) == NEEDS_USER,
                     what="termux step")
    setup = supervisor.states()[DEVICE]
    assert setup.state == NEEDS_USER and "F-Droid" in setup.reason and "com.termux.api" in setup.reason

    phone.packages.update({"com.termux", "com.termux.api"})  # installed from F-Droid
    await wait_until(lambda: state(supervisor) == STARTING, what="agent started")
    assert phone.run_commands  # the intent was sent; Termux ignores it without allow-external-apps


async def test_agent_that_never_connects_points_at_allow_external_apps(adb, bridge, archive):
    adb.add_phone(SERIAL, allow_external_apps=False)
    sup = AndroidSupervisor(
        devices=[{"id": DEVICE, "kind": "android", "serial": SERIAL}], token_for=lambda d: TOKEN,
        agent_port=bridge.port, adb_port=adb.port, device_port=free_port(),
        archive_builder=lambda: archive, start_adb_server=False, connect_timeout=0.3, backoff_max=0.3)
    task = asyncio.create_task(sup.run())
    try:
        await wait_until(lambda: sup.states()[DEVICE].step == "start"
                         and sup.states()[DEVICE].state == NEEDS_USER, what="hint")
        assert "allow-external-apps = true" in sup.states()[DEVICE].reason
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_lost_adb_server_is_reconnected(adb, supervisor):
    adb.add_phone(SERIAL, run_agents=False)
    await wait_until(lambda: state(supervisor) == STARTING, what="set up")
    adb.kill()
    await wait_until(lambda: state(supervisor) == ERROR, what="adb lost")
    assert "unreachable" in supervisor.states()[DEVICE].reason
    adb.start()  # same port
    await wait_until(lambda: state(supervisor) == STARTING, what="set up again")


async def test_dial_refuses_what_it_cannot_do(adb, supervisor):
    with pytest.raises(DialError):
        await supervisor.dial(DEVICE, "+33612345678")  # not plugged
    phone = adb.add_phone(SERIAL, run_agents=False)
    await wait_until(lambda: state(supervisor) == STARTING, what="set up")
    with pytest.raises(DialError):
        await supervisor.dial(DEVICE, "+33 6; reboot")
    with pytest.raises(DialError):
        await supervisor.dial("nope", "+33612345678")
    await supervisor.dial(DEVICE, "*#06#")
    assert phone.calls_placed == ["*%2306%23"]


def test_android_device_without_serial_is_a_config_error():
    with pytest.raises(ValueError, match="serial"):
        AndroidSupervisor(devices=[{"id": "p", "kind": "android"}], token_for=str, agent_port=1)
