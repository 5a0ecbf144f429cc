"""The modem agent against every vendor profile of the virtual modem.

One scenario per profile, the same for all: sends (single, multipart) with
their delivery reports, incoming SMS (single, multipart, and one arriving
while a command is in flight), a call, an unplug mid-send, and the agent
killed (SIGKILL, standalone) between reading an SMS and the bridge's ack.
At the end the counts come from the virtual modem's own records — what it
put on the air, what is left in its storage — and from what the bridge got:
nothing lost, nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import timeout, wait_until
from fakes.mini_bridge import MiniBridge

from device_agents import protocol
from device_agents.modem.agent import ModemAgent, ModemSettings
from device_agents.modem.virtual import PROFILES, VirtualModem

ROOT = Path(__file__).resolve().parent.parent
DEVICE, TOKEN = "m1", "matrix-token"
PROFILE_NAMES = sorted(name for name in PROFILES if name != "simcom-a7670")  # an alias
SETTINGS = dict(command_timeout=timeout(2.0), send_timeout=timeout(4.0), health_interval=0.5, ring_gap=1.0,
                reopen_backoff_max=0.5, multipart_timeout=30.0, poll_interval=1.0)
LONG = "".join(f"mot{i} " for i in range(60))  # 3 parts
# What the agent had to set on each (chosen from AT+CNMI=? / AT+CSMS=?, not hard-coded in it).
ROUTING = {
    "plain": ((2, 1, 0, 1, 0), 0),
    "quectel-ec25": ((2, 1, 0, 1, 0), 0),  # +CDS directly: its +CDSI points at the wrong memory
    "simcom-sim7600": ((2, 1, 0, 1, 0), 0),
    "huawei-e173": ((2, 1, 0, 1, 0), 0),
    "cinterion-mc75i": ((2, 1, 0, 2, 1), 0),  # no +CDS, <bfr> only 1: reports stored, read, deleted
    "csms1": ((2, 1, 0, 1, 0), 1),  # status reports only under +CSMS=1, each acknowledged
}


@pytest.fixture(params=PROFILE_NAMES)
def modem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VirtualModem]:
    with VirtualModem(link=tmp_path / "modem", profile=PROFILES[request.param], report_delay=0.05,
                      ring_interval=0.1, missed_rings=2, answer_delay=0.05) as m:
        yield m


@contextlib.asynccontextmanager
async def agent_running(tmp_path: Path, bridge: MiniBridge, modem: VirtualModem) -> AsyncIterator[ModemAgent]:
    agent = ModemAgent(device_id=DEVICE, url=bridge.url, token=TOKEN, journal_path=tmp_path / "journal.jsonl",
                       settings=ModemSettings(port=str(modem.link), **SETTINGS), status_interval=0.5)
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: bridge.connected(DEVICE) or task.done(), within=15, what="agent connected")
        if task.done():
            task.result()
        yield agent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def sms(job_id: str, text: str) -> protocol.SendSms:
    return protocol.SendSms(job_id=job_id, to="+33612345678", text=text, report=True)


def received_texts(bridge: MiniBridge) -> Counter[str]:
    """Each message once per distinct event (the bridge drops a resent event by its id)."""
    by_id = {e.event_id: e.text for e in bridge.of_kind(protocol.SmsReceived)}
    return Counter(by_id.values())


def on_air(modem: VirtualModem) -> Counter[tuple[str, int, int]]:
    """(text of the part, concat ref, seq) → how many times the modem transmitted it."""
    return Counter((t["text"], (t["concat"] or {}).get("ref", -1), (t["concat"] or {}).get("seq", 1))
                   for t in modem.snapshot()["transmissions"])


def stored(modem: VirtualModem) -> int:
    return sum(len(slots) for slots in modem.snapshot()["memories"].values())


async def test_the_agent_loses_and_doubles_nothing_on(modem: VirtualModem, tmp_path: Path) -> None:
    sent_texts: dict[str, str] = {}
    incoming: list[str] = []
    async with MiniBridge(tokens={DEVICE: TOKEN}) as bridge:
        # -- the agent killed between the read and the ack ------------------------------
        bridge.ack = False
        agent = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; waited on with a deadline
            [sys.executable, "-m", "device_agents.modem.agent", "--url", bridge.url, "--device", DEVICE,
             "--token", TOKEN, "--port", str(modem.link), "--journal", str(tmp_path / "journal.jsonl"),
             "--command-timeout", "2", "--poll-interval", "1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_until(lambda: bridge.connected(DEVICE), within=15, what="standalone agent connected")
            incoming.append("avant le crash")
            modem.incoming_sms("+33698765432", incoming[-1])
            await wait_until(lambda: received_texts(bridge)[incoming[-1]], what="read, not acked")
        finally:
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout(10))
        assert stored(modem) >= 1  # still in the modem: no ack, no delete
        await wait_until(lambda: not bridge.connected(DEVICE), what="the killed agent's session gone")
        bridge.ack = True

        async with agent_running(tmp_path, bridge, modem) as agent_in:
            # -- sends, single and multipart, with delivery reports ----------------------
            sent_texts["s1"] = "bonjour"
            sent_texts["m1"] = LONG
            await bridge.push(DEVICE, sms("s1", "bonjour"), sms("m1", LONG))
            for job in ("s1", "m1"):
                await wait_until(lambda j=job: "delivered" in bridge.job_states(j), within=15,
                                 what=f"{job} delivered")
            # -- incoming, single and multipart -------------------------------------------
            incoming += ["Réponse : OUI", "Une longue réponse. " * 12]
            modem.incoming_sms("+33698765432", incoming[-2])
            modem.incoming_sms("+33698765433", incoming[-1])
            # -- incoming while a command is in flight ------------------------------------
            modem.fault_slow(0.3)
            sent_texts["s2"] = "pendant"
            await bridge.push(DEVICE, sms("s2", "pendant"))
            await wait_until(lambda: any(c.startswith("AT+CMGS") for c in modem.commands[-3:]),
                             what="AT+CMGS under way")
            incoming.append("arrive pendant l'envoi")
            modem.incoming_sms("+33698765434", incoming[-1])
            await wait_until(lambda: "delivered" in bridge.job_states("s2"), within=15, what="s2 delivered")
            modem.fault_slow(0)
            # -- a call --------------------------------------------------------------------
            modem.call("+33698765435", missed=True)
            await wait_until(lambda: bridge.of_kind(protocol.CallEvent), within=10, what="call event")
            # -- unplugged mid-send --------------------------------------------------------
            modem.fault_slow(0.05)
            sent_texts["u1"] = "".join(f"zut{i} " for i in range(100))  # 4 parts
            await bridge.push(DEVICE, sms("u1", sent_texts["u1"]))
            await wait_until(lambda: any(t["concat"] and t["concat"]["total"] == 4
                                         for t in modem.snapshot()["transmissions"]),
                             what="a part of u1 on the air")
            modem.fault_unplug(0.3)
            await wait_until(lambda: agent_in.state != "online", what="offline")
            modem.fault_slow(0)
            await wait_until(lambda: {"sent", "unconfirmed"} & set(bridge.job_states("u1")), within=20,
                             what="u1 reported after the replug")
            # -- everything read, reported and deleted ------------------------------------
            await wait_until(lambda: all(received_texts(bridge)[t] for t in incoming), within=20,
                             what="every incoming SMS reported")
            await wait_until(lambda: stored(modem) == 0, within=20, what="storage emptied after the acks")
            u1_parts = {t["concat"]["seq"] for t in modem.snapshot()["transmissions"]
                        if t["concat"] and t["concat"]["total"] == 4}
            if u1_parts == {1, 2, 3, 4}:  # every part of u1 went out:
                # its status reports settle it, the uncertain part's too
                await wait_until(lambda: "delivered" in bridge.job_states("u1"), within=15, what="u1 delivered")

        # -- the counts, from the modem's own records -------------------------------------
        air = on_air(modem)
        assert max(air.values()) == 1, f"a part on the air twice: {air}"
        messages: dict[Any, dict[int, str]] = {}
        for text, ref, seq in air:
            messages.setdefault(ref if ref >= 0 else text, {})[seq] = text
        whole = {"".join(parts[s] for s in sorted(parts)) for parts in messages.values()}
        for job, text in sent_texts.items():
            states = bridge.job_states(job)
            if "delivered" in states or "sent" in states:
                assert text in whole, f"{job}: reported sent but not all of it on the air"
            else:
                assert "unconfirmed" in states, (job, states)
                assert "not sent again" in _reason(bridge.of_kind(protocol.JobState), job)
        got = received_texts(bridge)
        assert {t: got[t] for t in incoming} == dict.fromkeys(incoming, 1), got
        assert len(got) == len(incoming)
        calls = bridge.of_kind(protocol.CallEvent)
        assert [(c.direction, c.number) for c in calls] == [("missed", "+33698765435")]
        snap = modem.snapshot()
        cnmi, csms = ROUTING[modem.profile.name]
        assert (tuple(snap["settings"]["cnmi"]), snap["settings"]["csms"]) == (cnmi, csms)
        assert (sum(c.upper() == "AT+CNMA" for c in modem.commands) > 0) == (csms == 1)
        assert snap["urc_port"] in (None, "usbat", "1")  # Quectel / Huawei: URCs routed to this port
        print(f"\nmatrix {modem.profile.name}: on the air {sum(air.values())} parts (max {max(air.values())} each), "
              f"received {sum(got.values())} of {len(incoming)}, jobs {[bridge.job_states(j) for j in sent_texts]}, "
              f"left in storage {stored(modem)}")


def _reason(events: list[Any], job: str) -> str:
    return next((e.reason for e in events if e.job_id == job and e.reason), "")
