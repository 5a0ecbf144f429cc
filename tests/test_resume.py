"""Reconnects: the ledger resumes exactly, no job runs twice, no event is lost."""

from __future__ import annotations

import asyncio
import json

import websockets
from conftest import make_config, running, timeout, wait_until

from device_agents import protocol as p
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

RAW = {"id": "raw", "kind": "modem", "account": "user@email.com", "port": "/dev/null",
       "standalone": True, "token": "raw-token", "max_per_minute": 0}


class RawAgent:
    """An agent driven by hand, frame by frame."""

    def __init__(self, daemon, device_id="raw", token="raw-token"):
        self.url = f"ws://127.0.0.1:{daemon.listener.port}"
        self.device_id = device_id
        self.token = token
        self.ws = None

    async def connect(self, ledger=(), window=4):
        self.ws = await websockets.connect(self.url)
        challenge = p.decode(await self.ws.recv())
        await self.ws.send(p.encode(p.answer(challenge, device_id=self.device_id, token=self.token, window=window,
                                             ledger=tuple(p.LedgerEntry(job_id=j, state=s) for j, s in ledger))))
        welcome = p.decode(await self.ws.recv())
        assert isinstance(welcome, p.Welcome)
        return welcome

    async def next(self, kind, within=5.0):
        while True:
            msg = p.decode(await asyncio.wait_for(self.ws.recv(), timeout(within)))
            if isinstance(msg, kind):
                return msg

    async def send_events(self, *events):
        await self.ws.send(p.encode(p.Events(events=events)))
        return await self.next(p.Ack)

    async def close(self):
        await self.ws.close()


async def enqueue(daemon, n=1, **kw):
    from bridge.store.model import NewJob
    out = await daemon.store.enqueue("user@email.com", [NewJob(kind="sms", phone_number="+33612345678",
                                                               message=f"m{i}", **kw) for i in range(n)])
    daemon.dispatcher.wake()
    return [e.job for e in out]


async def state_of(daemon, job):
    return (await daemon.store.get_job("user@email.com", job.id_sms_api)).state


async def test_job_not_in_the_ledger_is_pushed_again_and_one_in_it_is_not(tmp_path):
    async with running(make_config(tmp_path, devices=[RAW])) as daemon:
        agent = RawAgent(daemon)
        await agent.connect()
        [a, b] = await enqueue(daemon, 2)
        pushed = await agent.next(p.Jobs)
        ids = [j.job_id for j in pushed.jobs]
        while len(ids) < 2:
            ids += [j.job_id for j in (await agent.next(p.Jobs)).jobs]
        assert sorted(ids) == sorted([a.job_id, b.job_id])
        await agent.close()
        await wait_until(lambda: "raw" not in daemon.dispatcher.sessions, what="offline")
        # Back with only job a in its ledger: b never reached it, so b comes again; a does not.
        await agent.connect(ledger=[(a.job_id, "accepted")])
        again = await agent.next(p.Jobs)
        assert [j.job_id for j in again.jobs] == [b.job_id]
        ack = await agent.send_events(p.JobState(event_id="1", job_id=a.job_id, state="sent", at=1.0),
                                      p.JobState(event_id="2", job_id=b.job_id, state="sent", at=1.0))
        assert ack.event_ids == ("1", "2")
        assert await state_of(daemon, a) == "sent" and await state_of(daemon, b) == "sent"
        await agent.close()


async def test_an_event_sent_twice_is_stored_once(tmp_path):
    async with running(make_config(tmp_path, devices=[RAW])) as daemon:
        agent = RawAgent(daemon)
        await agent.connect()
        sms = p.SmsReceived(event_id="42", sender="+33612345678", text="hello", at=1.0)
        await agent.send_events(sms)
        await agent.close()  # as if our ack had been lost
        await agent.connect()
        ack = await agent.send_events(sms)
        assert ack.event_ids == ("42",)  # acked again, so the agent can forget it
        assert len(await daemon.store.inbound("user@email.com")) == 1
        await agent.close()


async def test_rejected_job_goes_back_to_the_queue(tmp_path):
    async with running(make_config(tmp_path, devices=[RAW])) as daemon:
        agent = RawAgent(daemon)
        await agent.connect()
        [job] = await enqueue(daemon)
        pushed = await agent.next(p.Jobs)
        await agent.send_events(p.JobState(event_id="1", job_id=pushed.jobs[0].job_id, state="rejected",
                                           at=1.0, reason="lease lapsed"))
        again = await agent.next(p.Jobs)  # the dispatcher gives it out again
        assert again.jobs[0].job_id == job.job_id
        history = await daemon.store.history(job.id)
        assert [h["state"] for h in history] == ["queued", "dispatched", "queued", "dispatched"]
        assert "lease lapsed" in history[2]["reason"]
        await agent.close()


async def test_a_vanished_device_keeps_its_jobs_past_the_grace_time_until_it_comes_back(tmp_path):
    """It may have sent them while away: after the grace they are unconfirmed, never
    given to another device; when it comes back, its ledger and its events settle them."""
    devices = [RAW, {"id": "sim-2", "kind": "virtual", "account": "user@email.com", "latency": 0,
                     "jitter": 0, "delivery_delay": 0, "max_per_minute": 0}]
    config = make_config(tmp_path, devices=devices, agents={"lease_s": 0.2, "requeue_grace_s": 0.5})
    async with running(config) as daemon:
        # Hold the virtual phone back until the raw agent has the job.
        await wait_until(lambda: "sim-2" in daemon.dispatcher.sessions, what="sim-2 online")
        daemon.dispatcher.sessions["sim-2"].window = 0
        agent = RawAgent(daemon)
        await agent.connect()
        [job] = await enqueue(daemon)
        pushed = await agent.next(p.Jobs)
        assert pushed.jobs[0].job_id == job.job_id
        await agent.close()  # away, job unanswered
        daemon.dispatcher.sessions["sim-2"].window = 4
        await wait_until(lambda: _state_is(daemon, job, "unconfirmed"), within=15, what="unconfirmed after the grace")
        got = await daemon.store.get_job("user@email.com", job.id_sms_api)
        assert got.device_id == "raw" and got.attempts == 1 and "may have sent it" in got.reason
        daemon.dispatcher.wake()
        # sim-2 never gets it: a new job goes to sim-2 and is delivered while this one waits
        [other] = await enqueue(daemon)
        await wait_until(lambda: _state_is(daemon, other, "delivered"), within=15, what="another job delivered")
        assert await state_of(daemon, job) == "unconfirmed"
        # The device comes back: it had sent it, and says so.
        await agent.connect(ledger=[(job.job_id, "sent")])
        await agent.send_events(p.JobState(event_id="9", job_id=job.job_id, state="sent", at=1.0))
        assert await state_of(daemon, job) == "sent"
        history = [h["state"] for h in await daemon.store.history(job.id)]
        assert history == ["queued", "dispatched", "unconfirmed", "dispatched", "sent"]
        await agent.close()
        radio = (tmp_path / "virtual-sim-2-radio.jsonl").read_text().splitlines()
        assert [json.loads(r)["job_id"] for r in radio] == [other.job_id]


async def test_a_late_rejection_of_an_earlier_dispatch_does_not_send_the_job_twice(tmp_path):
    """The agent restarted before sending a job, so its ledger says rejected: the bridge puts
    the job back in the queue and may give it to the same device again. The rejection's
    event, still in the agent's outbox, arrives after that; it names the dispatch it was
    about (``attempt``) and does not take the new one back to the queue, where another
    device would send it while this one does."""
    devices = [RAW, {"id": "sim-2", "kind": "virtual", "account": "user@email.com", "latency": 0,
                     "jitter": 0, "delivery_delay": 0, "max_per_minute": 0}]
    async with running(make_config(tmp_path, devices=devices)) as daemon:
        await wait_until(lambda: "sim-2" in daemon.dispatcher.sessions, what="sim-2 online")
        daemon.dispatcher.sessions["sim-2"].window = 0  # held back: the job can only go to raw
        agent = RawAgent(daemon)
        await agent.connect()
        [job] = await enqueue(daemon)
        [first] = (await agent.next(p.Jobs)).jobs
        assert first.job_id == job.job_id and first.attempt == 1
        await agent.close()
        await wait_until(lambda: "raw" not in daemon.dispatcher.sessions, what="offline")
        await agent.connect(ledger=[(job.job_id, "rejected")])
        [second] = (await agent.next(p.Jobs)).jobs  # back in the queue, and to raw again
        assert second.job_id == job.job_id and second.attempt == 2
        ack = await agent.send_events(p.JobState(event_id="7", job_id=job.job_id, state="rejected", at=1.0,
                                                 reason="not transmitted before the agent restarted", attempt=1))
        assert ack.event_ids == ("7",)
        got = await daemon.store.get_job("user@email.com", job.id_sms_api)
        assert (got.state, got.device_id, got.attempts) == ("dispatched", "raw", 2)
        daemon.dispatcher.sessions["sim-2"].window = 4
        await agent.send_events(p.JobState(event_id="8", job_id=job.job_id, state="sent", at=1.0, attempt=2))
        assert await state_of(daemon, job) == "sent"
        await agent.close()
        assert not (tmp_path / "virtual-sim-2-radio.jsonl").exists() or \
            job.job_id not in (tmp_path / "virtual-sim-2-radio.jsonl").read_text()


async def _state_is(daemon, job, state):
    await daemon.dispatcher.maintain()
    return await state_of(daemon, job) == state


async def test_agent_restart_resumes_from_its_journal_without_sending_twice(tmp_path):
    """The real runtime: killed while jobs are in flight, started again on the same journal."""
    config = make_config(tmp_path, devices=[{**RAW, "token": "raw-token"}])
    async with running(config) as daemon:
        radio_log = tmp_path / "raw-radio.jsonl"
        journal_path = tmp_path / "raw-journal.jsonl"

        def agent():
            radio = VirtualRadio(device_id="raw", radio_log=radio_log,
                                 settings=RadioSettings(latency=0.05, jitter=0.05, delivery_delay=0.3))
            return AgentRuntime(url=f"ws://127.0.0.1:{daemon.listener.port}", device_id="raw",
                                token="raw-token", backend=radio, journal=Journal(journal_path),
                                window=8, workers=8)

        first = agent()
        task = asyncio.create_task(first.run())
        jobs = await enqueue(daemon, 40)
        await wait_until(lambda: radio_log.exists() and len(radio_log.read_text().splitlines()) >= 10,
                         what="some sends")
        task.cancel()  # the agent dies mid-flight
        await asyncio.gather(task, return_exceptions=True)
        await first.aclose()
        first.backend.close()

        second = agent()
        task = asyncio.create_task(second.run())
        try:
            for job in jobs:
                await wait_until(lambda job=job: _state_is(daemon, job, "delivered"), within=20, what=f"job {job.id}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await second.aclose()
            second.backend.close()
        sent = [json.loads(line)["job_id"] for line in radio_log.read_text().splitlines()]
        assert sorted(sent, key=lambda i: int(i.split(".")[0])) == [j.job_id for j in jobs]  # each exactly once


async def test_the_agent_names_the_dispatch_its_reports_are_about(tmp_path):
    """The real runtime says, in every report of a job, the ``attempt`` the job was pushed with."""
    config = make_config(tmp_path, devices=[{**RAW, "token": "raw-token"}])
    async with running(config) as daemon:
        journal_path = tmp_path / "raw-journal.jsonl"
        radio = VirtualRadio(device_id="raw", radio_log=tmp_path / "raw-radio.jsonl",
                             settings=RadioSettings(latency=0, jitter=0, delivery_delay=0))
        runtime = AgentRuntime(url=f"ws://127.0.0.1:{daemon.listener.port}", device_id="raw", token="raw-token",
                               backend=radio, journal=Journal(journal_path), window=8, workers=2)
        task = asyncio.create_task(runtime.run())
        try:
            jobs = await enqueue(daemon, 3)
            for job in jobs:
                await wait_until(lambda job=job: _state_is(daemon, job, "delivered"), what=f"job {job.id}")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.aclose()
            radio.close()
        reports = [rec["e"] for rec in map(json.loads, journal_path.read_text().splitlines())
                   if rec.get("t") == "event" and rec["e"].get("kind") == "job_state"]
        assert {r["job_id"] for r in reports} == {j.job_id for j in jobs}
        assert {r["state"] for r in reports} >= {"sent", "delivered"}
        assert all(r.get("attempt") == 1 for r in reports), reports


async def test_jobs_of_a_device_no_longer_configured_are_unconfirmed_after_the_grace_time(tmp_path):
    """It may have sent them before it was removed: never given to another device."""
    config = make_config(tmp_path, devices=[], agents={"lease_s": 0.1, "requeue_grace_s": 0.3})
    async with running(config) as daemon:
        [job] = await enqueue(daemon)
        [claimed] = await daemon.store.claim("user@email.com", "ghost", 1)  # as before a reload removed it
        assert claimed.id == job.id and await state_of(daemon, job) == "dispatched"
        await wait_until(lambda: _state_is(daemon, job, "unconfirmed"), what="unconfirmed")
        history = await daemon.store.history(job.id)
        assert history[-1]["state"] == "unconfirmed" and "offline" in history[-1]["reason"]
