"""The modem agent against the virtual modem on a real pseudo-terminal (opened
with pyserial, like a USB modem) and a stand-in bridge on a real websocket.

The virtual modem runs on its own thread and event loop; the agent on the
test's. Nothing waits with a fixed sleep: every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import timeout, wait_until
from fakes.mini_bridge import MiniBridge

from device_agents import protocol
from device_agents.modem import pdu
from device_agents.modem.agent import ModemAgent, ModemSettings
from device_agents.modem.durable import ModemJournal, legacy_state_path
from device_agents.modem.gsm7 import segment_count
from device_agents.modem.virtual import PROFILES, VirtualModem
from device_agents.modem.virtual.faults import FaultOptions

DEVICE = "m1"
TOKEN = "modem-token"
FAST = dict(command_timeout=timeout(2.0), send_timeout=timeout(3.0), health_interval=0.5, ring_gap=1.0,
            reopen_backoff_max=0.5, multipart_timeout=30.0)


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[VirtualModem]:
    with VirtualModem(link=tmp_path / "modem", radio_log=tmp_path / "radio.jsonl", report_delay=0.05,
                      ring_interval=0.1, missed_rings=2, answer_delay=0.05) as m:
        yield m


@pytest.fixture
async def bridge() -> AsyncIterator[MiniBridge]:
    async with MiniBridge(tokens={DEVICE: TOKEN}) as b:
        yield b


@contextlib.asynccontextmanager
async def agent_running(tmp_path: Path, bridge: MiniBridge, modem: VirtualModem, *, connect: bool = True,
                        **settings: Any) -> AsyncIterator[ModemAgent]:
    agent = ModemAgent(device_id=DEVICE, url=bridge.url, token=TOKEN, journal_path=tmp_path / "journal.jsonl",
                       settings=ModemSettings(port=str(modem.link), **{**FAST, **settings}),
                       status_interval=0.5)
    task = asyncio.create_task(agent.run())
    try:
        if connect:
            await wait_until(lambda: bridge.connected(DEVICE) or task.done(), what="agent connected")
            if task.done():
                task.result()
        yield agent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def transmissions(modem: VirtualModem) -> list[dict[str, Any]]:
    return modem.snapshot()["transmissions"]


def sms(job_id: str, to: str = "+33612345678", text: str = "hello", report: bool = True) -> protocol.SendSms:
    return protocol.SendSms(job_id=job_id, to=to, text=text, report=report)


def received(bridge: MiniBridge) -> list[protocol.SmsReceived]:
    return bridge.of_kind(protocol.SmsReceived)


# --------------------------------------------------------------------------


async def test_init_configures_the_modem_and_reports_health(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem) as agent:
        assert agent.state == "online"
        settings = modem.snapshot()["settings"]
        assert settings["echo"] is False and settings["cmee"] == 1 and settings["cmgf"] == 0
        assert tuple(settings["cnmi"][:2]) == (2, 1) and settings["cnmi"][3] in (1, 2)
        assert settings["clip"] == 1
        hello = bridge.hellos[-1]
        assert hello.capabilities.delivery_reports and hello.capabilities.calls
        status = await wait_until(lambda: bridge.statuses and bridge.statuses[-1], what="status")
        assert status.network == "registered" and status.operator == "SIMBRIDGE"
        assert status.signal == round(21 * 100 / 31) and status.technology == "LTE"


async def test_send_reports_sent_with_reference_then_delivered(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem):
        await bridge.push(DEVICE, sms("j1"))
        await wait_until(lambda: "delivered" in bridge.job_states("j1"), what="delivered")
        assert bridge.job_states("j1") == ["sent", "delivered"]
        sent = next(e for e in bridge.of_kind(protocol.JobState) if e.state == "sent")
        [tx] = transmissions(modem)
        assert tx["to"] == "+33612345678" and tx["text"] == "hello" and tx["report_requested"]
        assert sent.network_ref == str(tx["reference"]) and sent.parts == 1


async def test_multipart_goes_as_parts_with_one_reference_and_is_delivered_once_all_are(tmp_path, bridge, modem):
    text = "".join(f"word{i} " for i in range(80))  # ~500 GSM-7 characters: 4 parts
    async with agent_running(tmp_path, bridge, modem):
        await bridge.push(DEVICE, sms("long", text=text))
        await wait_until(lambda: "delivered" in bridge.job_states("long"), what="delivered")
        txs = transmissions(modem)
        assert [t["concat"]["seq"] for t in txs] == [1, 2, 3, 4]
        assert len({t["concat"]["ref"] for t in txs}) == 1 and all(t["concat"]["total"] == 4 for t in txs)
        assert "".join(t["text"] for t in txs) == text
        sent = next(e for e in bridge.of_kind(protocol.JobState) if e.state == "sent")
        assert sent.parts == 4 and sent.network_ref == ",".join(str(t["reference"]) for t in txs)
        assert bridge.job_states("long") == ["sent", "delivered"]


async def test_failed_status_report_fails_the_job(tmp_path, bridge, modem):
    modem.report_delay = 60.0  # the modem's own (delivered) report must not come first
    async with agent_running(tmp_path, bridge, modem):
        await bridge.push(DEVICE, sms("f1", report=True))
        await wait_until(lambda: "sent" in bridge.job_states("f1"), what="sent")
        # a second job to the same number: reports are matched by (reference, recipient)
        [tx] = transmissions(modem)
        report = pdu.encode_status_report(reference=tx["reference"], recipient="+33612345678",
                                          scts=datetime.now(UTC).replace(microsecond=0),
                                          discharge=datetime.now(UTC).replace(microsecond=0),
                                          status_code=0x41)
        # the network's failed report beats the modem's own (delivered) one
        modem._in_loop(modem._network_deliver, "report", report)
        await wait_until(lambda: "failed" in bridge.job_states("f1"), what="failed")
        failed = [e for e in bridge.of_kind(protocol.JobState) if e.state == "failed"][0]
        assert "0x41" in failed.reason
        await asyncio.sleep(0)


async def test_incoming_sms_is_reported_and_deleted_only_after_the_ack(tmp_path, bridge, modem):
    bridge.ack = False
    async with agent_running(tmp_path, bridge, modem):
        modem.incoming_sms("+33698765432", "Bonjour !")
        [event] = await wait_until(lambda: received(bridge), what="sms_received")
        assert (event.sender, event.text, event.incomplete) == ("+33698765432", "Bonjour !", False)
        assert len(modem.snapshot()["storage"]) == 1  # not acked: still on the SIM
        await bridge.sessions[DEVICE].send(protocol.encode(protocol.Ack(event_ids=(event.event_id,))))
        await wait_until(lambda: not modem.snapshot()["storage"], what="deleted after the ack")


async def test_multipart_incoming_is_reassembled(tmp_path, bridge, modem):
    text = "Ünïcödé ✓ " * 20  # UCS-2, 3 parts
    async with agent_running(tmp_path, bridge, modem):
        assert modem.incoming_sms("+33698765432", text) == 3
        [event] = await wait_until(lambda: received(bridge), what="sms_received")
        assert event.text == text and not event.incomplete
        await wait_until(lambda: not modem.snapshot()["storage"], what="all parts deleted")


async def test_multipart_with_a_part_missing_comes_out_incomplete(tmp_path, bridge, modem):
    now = datetime.now(UTC).replace(microsecond=0)
    parts = [pdu.encode_deliver("+33698765432", f"part{i} ", timestamp=now, concat=(77, 3, i)) for i in (1, 3)]
    async with agent_running(tmp_path, bridge, modem, multipart_timeout=0.3):
        for data in parts:  # the network delivers parts 1 and 3 of 3 (no public knob for that)
            modem._in_loop(modem._network_deliver, "deliver", data)
        [event] = await wait_until(lambda: received(bridge), what="incomplete sms")
        assert event.incomplete and event.text == "part1 part3 "
        await wait_until(lambda: not modem.snapshot()["storage"], what="parts deleted")


async def test_storage_is_read_at_start(tmp_path, bridge, modem):
    modem.incoming_sms("+33698765432", "while nobody listened")
    async with agent_running(tmp_path, bridge, modem):
        [event] = await wait_until(lambda: received(bridge), what="sms from storage")
        assert event.text == "while nobody listened"
        await wait_until(lambda: not modem.snapshot()["storage"], what="deleted")


async def test_incoming_sms_and_call_while_a_command_is_in_progress(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem):
        modem.fault_slow(0.3)  # every reply takes 0.3 s: the SMS arrives mid-command
        await bridge.push(DEVICE, sms("busy", text="x" * 300))
        await wait_until(lambda: len(modem.snapshot()["transmissions"]) >= 1, what="first part out")
        modem.incoming_sms("+33611111111", "during the send")
        modem.call("+33622222222", missed=True)
        await wait_until(lambda: "sent" in bridge.job_states("busy"), within=10, what="sent")
        [event] = await wait_until(lambda: received(bridge), what="sms_received")
        assert event.text == "during the send"
        calls = await wait_until(lambda: bridge.of_kind(protocol.CallEvent), what="call event")
        assert [(c.direction, c.number) for c in calls] == [("missed", "+33622222222")]
        modem.fault_slow(0)
        assert len(transmissions(modem)) == 2


async def test_dial_job_places_the_call_and_hangs_up(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem, hangup_after=0.3):
        await bridge.push(DEVICE, protocol.Dial(job_id="d1", to="+33633333333"))
        [call] = await wait_until(lambda: bridge.of_kind(protocol.CallEvent), what="call event")
        assert call.direction == "outgoing" and call.job_id == "d1" and call.number == "+33633333333"
        assert 0.2 <= call.duration_s < 3
        assert bridge.job_states("d1") == ["sent"]
        await wait_until(lambda: modem.snapshot()["calls"], what="modem saw the call end")
        assert modem.snapshot()["calls"][0]["direction"] == "out"


async def test_wrong_pin_parks_the_modem_after_one_try(tmp_path, bridge):
    with VirtualModem(link=tmp_path / "modem", pin="1234") as modem:
        async with agent_running(tmp_path, bridge, modem, connect=False, pin="9999") as agent:
            await wait_until(lambda: agent.state == "parked", what="parked")
            assert "refused" in agent.reason
            assert [c for c in modem.commands if c.upper().startswith("AT+CPIN=")] == ['AT+CPIN="9999"']
            assert not bridge.hellos
        # a restart with the same PIN does not try it again
        async with agent_running(tmp_path, bridge, modem, connect=False, pin="9999") as agent:
            await wait_until(lambda: agent.state == "parked", what="parked again")
            assert "before" in agent.reason
            assert len([c for c in modem.commands if c.upper().startswith("AT+CPIN=")]) == 1


async def test_missing_pin_parks_and_right_pin_unlocks(tmp_path, bridge):
    with VirtualModem(link=tmp_path / "modem", pin="1234") as modem:
        async with agent_running(tmp_path, bridge, modem, connect=False) as agent:
            await wait_until(lambda: agent.state == "parked", what="parked")
            assert "no pin" in agent.reason
            assert not any(c.upper().startswith("AT+CPIN=") for c in modem.commands)
        async with agent_running(tmp_path, bridge, modem, pin="1234") as agent:
            assert agent.state == "online" and modem.snapshot()["pin_state"] == "READY"


async def test_unplug_mid_send_reconciles_the_job(tmp_path, bridge, modem):
    text = "".join(f"part{i} " for i in range(120))  # 6 parts
    # The status reports come well after the unplug: one held in the modem (AT+CNMI <mode> 2)
    # while a part's AT+CMGS waited would be lost with it, and that part unconfirmed for good.
    modem.report_delay = timeout(3)
    async with agent_running(tmp_path, bridge, modem) as agent:
        modem.fault_slow(0.05)
        await bridge.push(DEVICE, sms("u1", text=text))
        await wait_until(lambda: len(transmissions(modem)) >= 2, what="two parts out")
        modem.fault_unplug(0.4)
        await wait_until(lambda: agent.state == "offline", what="offline")
        # "sent", or "unconfirmed" when a part's AT+CMGS was cut by the unplug
        await wait_until(lambda: {"sent", "unconfirmed"} & set(bridge.job_states("u1")), within=15,
                         what="reported after replug")
        states = bridge.job_states("u1")
        seqs = [t["concat"]["seq"] for t in transmissions(modem)]
        assert len(seqs) == len(set(seqs))  # no part ever on the air twice
        if sorted(seqs) == [1, 2, 3, 4, 5, 6]:  # all on the air: the reports settle it
            await wait_until(lambda: "delivered" in bridge.job_states("u1"), what="delivered after replug")
        else:  # a part lost with the unplug before it reached the radio: said so
            [event] = [e for e in bridge.of_kind(protocol.JobState) if e.state == "unconfirmed"]
            assert "not sent again" in event.reason
        assert states.count("sent") + states.count("unconfirmed") == 1


async def test_status_report_read_before_its_answer_survives_the_unplug(tmp_path, bridge):
    """A modem that sends +CDS at once, even while AT+CMGS waits (AT+CNMI <mode> 1/3): the
    report is read before the part's reference, the modem goes before its answer; the part is
    uncertain, and the report already read settles it once the modem is back."""
    with VirtualModem(link=tmp_path / "modem", report_delay=0.0, faults=FaultOptions(urcs_in_replies=True)) as modem:
        async with agent_running(tmp_path, bridge, modem) as agent:
            # The answer to AT+CMGS comes late; the report at once. A reply with information lines
            # is slowed twice (before the lines, before OK): 1.2 of the 2.0 the health check's
            # AT+CSQ may take, or the agent resets the modem in the middle of the send.
            modem.fault_slow(timeout(0.6))
            await bridge.push(DEVICE, sms("early"))
            await wait_until(lambda: agent._parts is not None and agent._parts.outgoing._unmatched,
                             what="the report read before the answer")
            modem.fault_unplug(0.3)
            await wait_until(lambda: "unconfirmed" in bridge.job_states("early"), within=15,
                             what="unconfirmed after the replug")
            await wait_until(lambda: "delivered" in bridge.job_states("early"), what="delivered by the early report")
            assert len(transmissions(modem)) == 1


async def test_unplug_while_idle_goes_offline_and_comes_back(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem) as agent:
        modem.fault_unplug(0.3)
        await wait_until(lambda: not bridge.connected(DEVICE), what="disconnected from the bridge")
        await wait_until(lambda: bridge.connected(DEVICE) and agent.state == "online", within=10,
                         what="back online")
        await bridge.push(DEVICE, sms("after"))
        await wait_until(lambda: "delivered" in bridge.job_states("after"), what="delivered")


async def test_modem_reboot_is_noticed_and_the_modem_configured_again(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem):
        modem.fault_reboot()
        await wait_until(lambda: modem.snapshot()["settings"]["cnmi"][1] == 1
                         and not modem.snapshot()["settings"]["echo"], what="configured again")
        modem.incoming_sms("+33698765432", "after reboot")
        await wait_until(lambda: received(bridge), what="sms after reboot")


async def test_agent_killed_before_the_ack_reports_the_sms_once_after_restart(tmp_path, bridge, modem):
    bridge.ack = False
    async with agent_running(tmp_path, bridge, modem):
        modem.incoming_sms("+33698765432", "only once")
        [first] = await wait_until(lambda: received(bridge), what="sms_received")
    assert len(modem.snapshot()["storage"]) == 1
    bridge.ack = True
    async with agent_running(tmp_path, bridge, modem):
        await wait_until(lambda: not modem.snapshot()["storage"], what="deleted after the ack")
        assert {e.event_id for e in received(bridge)} == {first.event_id}
    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert sum(1 for r in journal if r.get("t") == "event" and r["e"]["kind"] == "sms_received") <= 1


async def test_a_modem_that_stops_answering_is_reset_and_an_untransmitted_job_handed_back(tmp_path, bridge, modem):
    async with agent_running(tmp_path, bridge, modem, command_timeout=0.4, send_timeout=0.4) as agent:
        modem.fault_slow(1.5)  # every reply now comes too late, the "> " prompt too
        await bridge.push(DEVICE, sms("slow", report=False))
        await wait_until(lambda: agent.state != "online", within=10, what="the agent gave up on the modem")
        modem.fault_slow(0)
        # no prompt, so no PDU written: handed back for the bridge to give out again
        await wait_until(lambda: "rejected" in bridge.job_states("slow"), within=15, what="handed back")
        assert transmissions(modem) == []
        await wait_until(lambda: bridge.connected(DEVICE), within=15, what="back online")
        await bridge.push(DEVICE, sms("slow-again", report=False))  # what the bridge's requeue does
        await wait_until(lambda: "sent" in bridge.job_states("slow-again"), within=15, what="sent once it answers")
        assert [t["to"] for t in transmissions(modem)] == ["+33612345678"]


def test_the_state_of_an_earlier_version_is_adopted_into_the_journal(tmp_path):
    """Earlier versions kept the modem's memory in a second file beside the
    journal; it is read once, written into the journal, and removed."""
    journal_path = tmp_path / "journal.jsonl"
    legacy = legacy_state_path(journal_path)
    legacy.write_text(json.dumps({"concat_ref": 7, "bad_pin": None, "refs": {"5:612345678": ["j1", 1]},
                                  "sends": {"j1": {"to": "+33612345678", "total": 1, "mrs": {"1": 5},
                                                   "report": True, "sent": True, "at": time.time()}},
                                  "incoming": {"3:abcdef": "12"}}))
    journal = ModemJournal(journal_path)
    journal.close()
    assert not legacy.exists()
    again = ModemJournal(journal_path)
    assert again.memory.concat_ref == 7 and again.memory.refs == {"5:612345678": ["j1", 1]}
    assert again.memory.incoming == {"SM:3:abcdef": "12"} and again.memory.sends["j1"]["mrs"] == {"1": 5}
    again.close()


def test_a_memory_change_rides_in_the_same_write_as_its_event(tmp_path):
    journal = ModemJournal(tmp_path / "journal.jsonl")
    journal.memory.incoming["SM:1:aa"] = journal.next_event_id()
    journal.changed()
    before = (tmp_path / "journal.jsonl").read_text()
    journal.add_events([protocol.SmsReceived(event_id="1", sender="+33698765432", text="x", at=0.0)])
    added = (tmp_path / "journal.jsonl").read_text()[len(before):].splitlines()
    assert [json.loads(line)["t"] for line in added] == ["modem", "event", "seq"]
    journal.close()
    replayed = ModemJournal(tmp_path / "journal.jsonl")
    assert replayed.memory.incoming == {"SM:1:aa": "1"} and list(replayed.outbox) == ["1"]
    replayed.close()


# --------------------------------------------------------------------------
# faults of any profile


@pytest.mark.parametrize("profile", ["plain", "huawei-e173"])
async def test_lines_cut_anywhere_and_urcs_inside_replies_change_nothing(tmp_path, bridge, profile):
    faults = FaultOptions(split_lines=True, urcs_in_replies=True)
    with VirtualModem(link=tmp_path / "modem", profile=PROFILES[profile], report_delay=0.05, faults=faults) as modem:
        async with agent_running(tmp_path, bridge, modem):
            long_text = "".join(f"x{i} " for i in range(90))
            await bridge.push(DEVICE, sms("a", text=long_text), sms("b"))
            modem.incoming_sms("+33698765432", "coupé n'importe où")
            for job in ("a", "b"):
                await wait_until(lambda j=job: "delivered" in bridge.job_states(j), within=15, what=f"{job}")
            [event] = await wait_until(lambda: received(bridge), what="sms_received")
            assert event.text == "coupé n'importe où"
            await wait_until(lambda: not modem.snapshot()["storage"], what="deleted after the ack")
            assert len(transmissions(modem)) == segment_count(long_text).parts + 1  # each part once


async def test_a_slow_network_gets_no_second_copy_and_a_late_report_settles_it(tmp_path, bridge):
    """The modem puts the SMS on the air at once and answers after the network (3 s);
    the agent waits 1 s: the part is never sent again, the job says unconfirmed, and
    the status report that comes later settles it."""
    faults = FaultOptions(network_delay=3.0)
    with VirtualModem(link=tmp_path / "modem", report_delay=0.05, faults=faults) as modem:
        async with agent_running(tmp_path, bridge, modem, send_timeout=1.0, command_timeout=1.0):
            await bridge.push(DEVICE, sms("slow-net"))
            await wait_until(lambda: "unconfirmed" in bridge.job_states("slow-net"), within=15,
                             what="unconfirmed")
            [event] = [e for e in bridge.of_kind(protocol.JobState) if e.state == "unconfirmed"]
            assert "not sent again" in event.reason and "1/1" in event.reason
            await wait_until(lambda: "delivered" in bridge.job_states("slow-net"), within=15,
                             what="settled by the status report")
            assert len(transmissions(modem)) == 1


async def test_a_refused_part_is_failed_not_sent_again(tmp_path, bridge):
    with VirtualModem(link=tmp_path / "modem", report_delay=0.05, faults=FaultOptions(cms500_rate=1.0)) as modem:
        async with agent_running(tmp_path, bridge, modem):
            await bridge.push(DEVICE, sms("refused"))
            await wait_until(lambda: bridge.job_states("refused"), what="an answer")
            [event] = [e for e in bridge.of_kind(protocol.JobState) if e.job_id == "refused"]
            assert event.state == "failed" and "500" in event.reason
            assert transmissions(modem) == []
            assert sum(c.startswith("AT+CMGS") for c in modem.commands) == 1
