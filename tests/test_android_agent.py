"""The Android helper agent, end to end: the built archive runs as a real
process (stdlib only: ``python -S``) with fake ``termux-*`` commands on PATH,
against a small websocket stand-in for the bridge."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from fakes.mini_bridge import TIMEOUT_FACTOR, MiniBridge, wait_until
from fakes.termux.termux_fake import PhoneState

from device_agents import protocol
from device_agents.android.build import build_archive
from device_agents.android.termux import PhoneClock, parse_duration
from device_agents.common import same_number

DEVICE = "phone-1"
TOKEN = "t0ken-phone-1"
PHONE_TZ = "America/New_York"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_archive(tmp_path_factory.mktemp("archive") / "simbridge-agent.pyz")


class AgentProcess:
    def __init__(self, archive: Path, phone: PhoneState, workdir: Path, url: str, **extra) -> None:
        self.archive = archive
        self.phone = phone
        self.data_dir = workdir / "termux-home" / ".simbridge"
        self.config_path = workdir / "agent.json"
        # confirm_timeout is a product timeout the tests wait on: each fake termux-* command is a
        # Python process of its own, slow on a busy machine, so it is generous and scaled.
        config = {"device_id": DEVICE, "token": TOKEN, "url": url, "timezone": PHONE_TZ,
                  "poll_interval": 0.05, "status_interval": 0.5, "confirm_timeout": 20.0 * TIMEOUT_FACTOR}
        config.update(extra)
        self.config_path.write_text(json.dumps(config))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> asyncio.subprocess.Process:
        # -S: no site-packages: the archive must carry everything it needs.
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-S", str(self.archive), "--config", str(self.config_path),
            "--data-dir", str(self.data_dir), env=self.phone.env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        return self.proc

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(sig)
            await asyncio.wait_for(self.proc.wait(), 10)


@pytest.fixture
def phone(tmp_path: Path) -> PhoneState:
    return PhoneState(tmp_path / "phone", timezone=PHONE_TZ)


@pytest.fixture
async def bridge():
    async with MiniBridge(tokens={DEVICE: TOKEN}) as b:
        yield b


@pytest.fixture
async def agent(archive, phone, tmp_path, bridge):
    a = AgentProcess(archive, phone, tmp_path, bridge.url)
    yield a
    await a.stop(signal.SIGKILL)


def sms_job(job_id: str, to: str = "+33612345678", text: str = "Bonjour, votre code est 1234") -> protocol.SendSms:
    return protocol.SendSms(job_id=job_id, to=to, text=text)


# -- pure parts ------------------------------------------------------------------


def test_phone_clock_converts_with_the_phone_zone():
    clock = PhoneClock("America/New_York")
    assert clock.to_unix("2024-07-01 08:00:00") == 1719835200.0  # 12:00 UTC, EDT
    assert clock.to_unix("2024-01-15 07:00:00") == 1705320000.0  # 12:00 UTC, EST
    assert clock.format(1719835200.0) == "2024-07-01 08:00:00"


def test_durations_and_numbers():
    assert parse_duration("00:42") == 42
    assert parse_duration("01:02:03") == 3723
    assert parse_duration("garbage") == 0
    assert same_number("+33612345678", "0612345678")
    assert not same_number("+33612345678", "+33612345679")
    assert same_number("Orange", "orange")


# -- end to end ------------------------------------------------------------------


async def test_hello_says_what_this_route_can_do(agent, bridge):
    await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    hello = bridge.hellos[-1]
    assert hello.capabilities.delivery_reports is False
    assert hello.capabilities.sms and hello.capabilities.calls
    assert hello.timezone == PHONE_TZ
    assert hello.agent.startswith("simbridge-android/")
    status = await wait_until(lambda: bridge.statuses and bridge.statuses[-1], what="status")
    assert (status.battery, status.charging, status.network, status.signal, status.technology) == \
        (81, True, "registered", 75, "LTE")
    assert status.operator == "Orange F"


async def test_sms_is_sent_once_and_confirmed_from_the_sent_box(agent, bridge, phone):
    await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    await bridge.push(DEVICE, sms_job("j1"), sms_job("j2", to="+33698765432", text="-n tricky text"))
    await wait_until(lambda: bridge.job_states("j1") == ["sent"] and bridge.job_states("j2") == ["sent"],
                     what="both jobs sent")
    sends = phone.sends()
    assert [(s["to"], s["text"]) for s in sends] == [
        (["+33612345678"], "Bonjour, votre code est 1234"), (["+33698765432"], "-n tricky text")]
    # Pushed again (the bridge missed the answer): not sent twice.
    await bridge.push(DEVICE, sms_job("j1"))
    await wait_until(lambda: len(bridge.job_states("j1")) == 2, what="second answer")
    assert bridge.job_states("j1") == ["sent", "sent"]
    assert len(phone.sends()) == 2


async def test_failed_box_and_silence_both_fail_the_job(agent, bridge, phone):
    agent.config_path.write_text(json.dumps({**json.loads(agent.config_path.read_text()),
                                             "confirm_timeout": 8.0 * TIMEOUT_FACTOR}))
    phone.set(fail_numbers=["+33600000000"])
    await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    await bridge.push(DEVICE, sms_job("bad", to="+33600000000"))
    await wait_until(lambda: bridge.job_states("bad"), what="outcome")
    failed = [e for e in bridge.of_kind(protocol.JobState) if e.job_id == "bad"][0]
    assert failed.state == "failed" and "failed box" in failed.reason
    phone.set(send_mode="silent")  # e.g. SEND_SMS not granted: termux-sms-send says nothing
    await bridge.push(DEVICE, sms_job("lost"))
    await wait_until(lambda: bridge.job_states("lost"), what="timeout outcome")
    lost = [e for e in bridge.of_kind(protocol.JobState) if e.job_id == "lost"][0]
    assert lost.state == "failed" and "no sent or failed record" in lost.reason


async def test_incoming_sms_and_calls_are_reported_once_with_utc_times(agent, bridge, phone):
    phone.receive_sms("+33611111111", "old message, before the agent")
    phone.add_call("+33611111111", "INCOMING", duration=30)
    await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    at = float(int(time.time()) - 3600)
    phone.receive_sms("+33622222222", "Bonjour !\nSecond line", at=at)
    phone.add_call("+33633333333", "MISSED", at=at)
    phone.add_call("+33644444444", "OUTGOING", duration=125, at=at + 10)
    phone.add_call("+33655555555", "REJECTED", at=at + 20)
    await wait_until(lambda: len(bridge.of_kind(protocol.SmsReceived)) == 1
                     and len(bridge.of_kind(protocol.CallEvent)) == 3, what="incoming events")
    sms = bridge.of_kind(protocol.SmsReceived)[0]
    assert (sms.sender, sms.text, sms.at) == ("+33622222222", "Bonjour !\nSecond line", at)
    calls = {c.number: c for c in bridge.of_kind(protocol.CallEvent)}
    assert (calls["+33633333333"].direction, calls["+33633333333"].at) == ("missed", at)
    assert (calls["+33644444444"].direction, calls["+33644444444"].duration_s) == ("outgoing", 125)
    assert calls["+33655555555"].direction == "missed"
    # Nothing is reported twice on later polls.
    phone.receive_sms("+33622222222", "another")
    await wait_until(lambda: len(bridge.of_kind(protocol.SmsReceived)) == 2, what="second sms")
    assert len(bridge.of_kind(protocol.CallEvent)) == 3


async def test_restart_loses_nothing_and_sends_nothing_twice(agent, bridge, phone):
    await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    await bridge.push(DEVICE, sms_job("r1"))
    await wait_until(lambda: bridge.job_states("r1") == ["sent"], what="r1 sent")
    bridge.ack = False  # the bridge stores nothing from now on
    phone.receive_sms("+33622222222", "unacked")
    await wait_until(lambda: bridge.of_kind(protocol.SmsReceived), what="first copy")
    await agent.stop(signal.SIGKILL)
    await wait_until(lambda: not bridge.connected(DEVICE), what="disconnect")
    phone.receive_sms("+33677777777", "while the agent was down")
    bridge.ack = True
    await agent.start()
    await wait_until(lambda: len({e.event_id for e in bridge.of_kind(protocol.SmsReceived)}) == 2,
                     what="both messages")
    texts = {e.event_id: e.text for e in bridge.of_kind(protocol.SmsReceived)}
    assert sorted(texts.values()) == ["unacked", "while the agent was down"]
    await bridge.push(DEVICE, sms_job("r1"))
    await wait_until(lambda: len(bridge.job_states("r1")) == 2, what="ledger answer")
    assert len(phone.sends()) == 1


async def test_crash_while_sending_is_settled_from_the_sent_box(agent, bridge, phone):
    await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    phone.set(send_mode="outbox")  # the message stays queued: the agent waits
    await bridge.push(DEVICE, sms_job("c1"))
    await wait_until(lambda: phone.sends(), what="handed to Android")
    await agent.stop(signal.SIGKILL)
    phone.settle_outbox("sent")
    await agent.start()
    await wait_until(lambda: bridge.job_states("c1"), what="recovered outcome")
    assert bridge.job_states("c1") == ["sent"]
    assert len(phone.sends()) == 1


async def test_a_second_start_leaves_the_running_agent_alone(agent, bridge, archive, phone, tmp_path):
    first = await agent.start()
    await wait_until(lambda: bridge.connected(DEVICE), what="agent connected")
    again = AgentProcess(archive, phone, tmp_path, bridge.url)
    second = await again.start()
    assert await asyncio.wait_for(second.wait(), 10) == 0
    assert first.returncode is None and bridge.connected(DEVICE)
    # The config file lives on privately, readable by the agent only.
    private = agent.data_dir / f"{DEVICE}-config.json"
    assert private.exists() and (os.stat(private).st_mode & 0o077) == 0
