"""The modem agent inside the real daemon (HTTP API, store, dispatcher,
websocket), driving the virtual modem on a real pseudo-terminal.

The daemon-killed case runs the agent standalone in a subprocess (the same
code the daemon runs in-process), kills it with SIGKILL between reading an
SMS and the bridge's ack, then starts the daemon on the same journal.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import api_url, make_config, running, timeout, wait_until

from device_agents.journal import Journal
from device_agents.modem.agent import journal_path_for
from device_agents.modem.durable import ModemJournal
from device_agents.modem.virtual_modem import VirtualModem

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "user@email.com"
AUTH = {"login": ACCOUNT, "accessKey": "your-access-key"}
BEARER = {"Authorization": "Bearer your-access-key"}


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[VirtualModem]:
    with VirtualModem(link=tmp_path / "modem", radio_log=tmp_path / "radio.jsonl", report_delay=0.05) as m:
        yield m


def modem_config(tmp_path: Path, modem: VirtualModem, **options: Any):
    device = {"id": "m1", "kind": "modem", "account": ACCOUNT, "port": str(modem.link), "max_per_minute": 0,
              "command_timeout": timeout(3), **options}
    return make_config(tmp_path, devices=[device])


async def send(http: aiohttp.ClientSession, daemon: Any, text: str, number: str = "+33612345678") -> str:
    async with http.post(api_url(daemon, "/api/v1/sendsms"),
                         json={"header": AUTH, "messages": [{"phone_number": number, "message": text}]}) as resp:
        assert resp.status == 200, await resp.text()
        [answer] = await resp.json()
        assert answer["sent"] == 1, answer
        return answer["id_sms_api"]


async def job_state(daemon: Any, id_sms_api: str) -> str | None:
    job = await daemon.store.get_job(ACCOUNT, id_sms_api)
    return job.state if job else None


def transmissions(modem: VirtualModem) -> list[dict[str, Any]]:
    return modem.snapshot()["transmissions"]


async def test_sms_through_the_daemon_is_sent_by_the_modem_and_delivered(tmp_path, modem):
    text = "Votre code : 4711. " * 12  # two parts
    async with running(modem_config(tmp_path, modem)) as daemon, aiohttp.ClientSession() as http:
        id_sms_api = await send(http, daemon, text)
        await wait_until(lambda: _is(job_state(daemon, id_sms_api), "delivered"), within=15, what="delivered")
        async with http.get(api_url(daemon, f"/api/v1/sms/{id_sms_api}"), headers=BEARER) as resp:
            data = (await resp.json())["data"]
        assert [h["status"] for h in data["history"]] == ["queued", "dispatched", "sent", "delivered"]
        txs = transmissions(modem)
        assert [t["concat"]["seq"] for t in txs] == [1, 2] and "".join(t["text"] for t in txs) == text
        devices = daemon.devices_view(None)
        assert devices[0]["state"] == "online" and devices[0]["delivery_reports"]


async def test_incoming_sms_reaches_the_store_and_leaves_the_sim(tmp_path, modem):
    async with running(modem_config(tmp_path, modem)) as daemon:
        await wait_until(lambda: daemon.dispatcher.sessions.get("m1"), what="modem online")
        modem.incoming_sms("+33698765432", "Réponse : OUI")
        rows = await wait_until(lambda: daemon.store.inbound(ACCOUNT), what="inbound stored")
        assert [(r["sender"], r["text"]) for r in rows] == [("+33698765432", "Réponse : OUI")]
        await wait_until(lambda: not modem.snapshot()["storage"], what="deleted from the SIM")


async def test_unplug_and_replug_mid_send_through_the_daemon(tmp_path, modem):
    text = "".join(f"chunk{i} " for i in range(100))  # 6 parts
    # The status reports come well after the unplug. One that came while the part's AT+CMGS
    # waited for its answer would be held in the modem (AT+CNMI <mode> 2) and lost with it
    # when the cable goes (TS 27.005 §3.4.1; a report routed with AT+CSMS=0 is not
    # acknowledged, so the network does not send it again): that part would then stay
    # unconfirmed for good, and the job could never be delivered.
    modem.report_delay = timeout(3)
    async with running(modem_config(tmp_path, modem)) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: daemon.dispatcher.sessions.get("m1"), what="modem online")
        modem.fault_slow(0.05)
        id_sms_api = await send(http, daemon, text)
        await wait_until(lambda: len(transmissions(modem)) >= 2, what="two parts on the air")
        modem.fault_unplug(0.3)
        await wait_until(lambda: "m1" not in daemon.dispatcher.sessions, what="offline")
        await wait_until(lambda: _in(job_state(daemon, id_sms_api), {"sent", "unconfirmed", "delivered"}),
                         within=20, what="reported after the replug")
        seqs = [t["concat"]["seq"] for t in transmissions(modem)]
        assert len(seqs) == len(set(seqs))  # never a part on the air twice
        total = transmissions(modem)[0]["concat"]["total"]
        if sorted(seqs) == list(range(1, total + 1)):
            await wait_until(lambda: _is(job_state(daemon, id_sms_api), "delivered"), within=20,
                             what="delivered after the replug")
            by_seq = {t["concat"]["seq"]: t for t in transmissions(modem)}
            assert "".join(by_seq[s]["text"] for s in sorted(by_seq)) == text


async def test_daemon_killed_between_read_and_ack_reports_the_sms_once(tmp_path, modem):
    """The agent reads the SMS and journals it, but dies before any ack: the
    SMS stays on the SIM, and after the restart it is reported exactly once."""
    journal = journal_path_for(tmp_path, "m1")
    # Phase 1: the agent, standalone, with a bridge that is not there (so no ack can come).
    agent = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; it is waited on with a deadline
        [sys.executable, "-m", "device_agents.modem.agent", "--url", "ws://127.0.0.1:9", "--device", "m1",
         "--token", "t", "--port", str(modem.link), "--journal", str(journal)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        modem.incoming_sms("+33698765432", "ne le perdez pas")
        await wait_until(lambda: journal.exists() and "sms_received" in journal.read_text(), within=15,
                         what="the agent journalled the SMS")
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout(10))
    assert len(modem.snapshot()["storage"]) == 1  # still on the SIM
    # One state file: the record→event map went in the same write as the event.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("modem-m1")) == [journal.name]
    killed = ModemJournal(journal)
    [event_id] = killed.outbox
    assert list(killed.memory.incoming.values()) == [event_id]
    killed.close()
    # Phase 2: the daemon, with the modem agent inside, on the same journal.
    async with running(modem_config(tmp_path, modem)) as daemon:
        rows = await wait_until(lambda: daemon.store.inbound(ACCOUNT), what="inbound stored")
        await wait_until(lambda: not modem.snapshot()["storage"], what="deleted from the SIM after the ack")
        await asyncio.sleep(0)
        rows = await daemon.store.inbound(ACCOUNT)
        assert [(r["sender"], r["text"]) for r in rows] == [("+33698765432", "ne le perdez pas")]
    replayed = Journal(journal)
    assert not replayed.outbox  # nothing left unacked
    replayed.close()


async def _is(coro: Any, expected: Any) -> bool:
    return (await coro) == expected


async def _in(coro: Any, expected: set[Any]) -> bool:
    return (await coro) in expected


@pytest.mark.parametrize("situation", ["unplugged", "unplugged-at-the-term", "mid-send"])
async def test_sigterm_stops_the_standalone_agent_whatever_the_link_does(tmp_path, modem, situation):
    """systemd gives the service TimeoutStopSec (30 s) before SIGKILL; the agent is out well
    within it, whether the modem is gone, going, or busy sending."""
    from fakes.mini_bridge import MiniBridge

    from device_agents import protocol

    async with MiniBridge(tokens={"m1": "t"}) as bridge:
        agent = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; waited on with a deadline
            [sys.executable, "-m", "device_agents.modem.agent", "--url", bridge.url, "--device", "m1",
             "--token", "t", "--port", str(modem.link), "--journal", str(tmp_path / "j.jsonl"),
             "--command-timeout", "2", "--send-timeout", "120"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            await wait_until(lambda: bridge.connected("m1"), within=15, what="agent online")
            if situation == "unplugged":
                modem.fault_unplug(600)
                await wait_until(lambda: not bridge.connected("m1"), what="offline, reopening with backoff")
            elif situation == "unplugged-at-the-term":
                modem.fault_unplug(600)
            else:
                modem.fault_slow(300)  # the modem answers nothing for five minutes
                await bridge.push("m1", protocol.SendSms(job_id="j", to="+33612345678", text="x"))
                await wait_until(lambda: any(c.startswith("AT+CMGS") for c in modem.commands), what="sending")
            agent.send_signal(signal.SIGTERM)
            started = asyncio.get_running_loop().time()
            await wait_until(lambda: agent.poll() is not None, within=10, what="the agent exited")
            assert asyncio.get_running_loop().time() - started < timeout(10)
            assert agent.returncode == 0, agent.stderr.read().decode()[-2000:] if agent.stderr else ""
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout(10))
