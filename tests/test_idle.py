"""An idle daemon leaves its store alone: a heartbeat carries only the device
rows that changed, and maintenance runs when a ttl or a grace ends, not on a
clock. What is due still happens on time, with nobody asking."""

from __future__ import annotations

import time

import pytest
from conftest import make_config, running, timeout, wait_until
from test_resume import RAW, RawAgent, enqueue, state_of

from bridge.daemon import Daemon
from device_agents import protocol as p
from device_agents import runtime as runtime_module
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

PHONES = [{"id": f"sim-{i}", "kind": "virtual", "account": "user@email.com", "latency": 0, "jitter": 0,
           "delivery_delay": 0, "max_per_minute": 0} for i in range(3)]


class StoreCalls:
    """Counts the daemon's calls to some of its store's methods, and what each publish carried."""

    def __init__(self, store, names):
        self.calls = {name: 0 for name in names}
        self.published: list[list[str]] = []
        for name in names:
            setattr(store, name, self._counted(name, getattr(store, name)))
        publish = store.publish_presence

        async def publish_presence(node, devices, **kw):
            devices = list(devices)
            await publish(node, devices, **kw)
            self.published.append(sorted(d[0] for d in devices))  # once written
        store.publish_presence = publish_presence

    def _counted(self, name, method):
        async def counted(*args, **kw):
            self.calls[name] += 1
            return await method(*args, **kw)
        return counted


async def test_an_idle_daemon_publishes_only_changed_rows_and_does_not_maintain_on_a_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(Daemon, "PRESENCE_INTERVAL_S", 0.2)
    async with running(make_config(tmp_path, devices=PHONES)) as daemon:
        await wait_until(lambda: all(d["id"] in daemon.dispatcher.sessions for d in PHONES), what="phones online")
        # Each phone's first status (its signal) is a change; then nothing is.
        await wait_until(lambda: all(daemon.dispatcher.health[d["id"]].status for d in PHONES), what="statuses")
        spy = StoreCalls(daemon.store, ["expire", "next_expiry", "devices_in_flight", "strand_device"])
        await wait_until(lambda: len(spy.published) >= 2, what="two heartbeats")
        spy.published.clear()
        await wait_until(lambda: len(spy.published) >= 8, what="eight more heartbeats")
        assert spy.published == [[]] * len(spy.published), "rows re-published though nothing changed"
        # About 1.6 s: well within MAINTAIN_IDLE_S, and nothing was queued, nor went away.
        assert spy.calls["expire"] == spy.calls["strand_device"] == 0, spy.calls
        assert spy.calls["next_expiry"] <= 1 and spy.calls["devices_in_flight"] <= 1, spy.calls
        assert daemon._cluster == []  # one daemon: its own rows are not read back

        # A phone goes: its row alone is published, at once.
        spy.published.clear()
        session = daemon.dispatcher.sessions["sim-1"]
        await session.ws.close()
        await wait_until(lambda: ["sim-1"] in spy.published, what="sim-1's row published")
        assert all(rows in ([], ["sim-1"]) for rows in spy.published), spy.published
        rows = {r["device_id"]: r for r in await daemon.store.presence(stale_after=10)}
        assert not rows["sim-1"]["online"] and rows["sim-0"]["online"] and rows["sim-2"]["online"]


@pytest.mark.parametrize("what", ["ttl", "grace"])
async def test_what_is_due_happens_on_time_with_nobody_asking(tmp_path, what):
    """No call to ``maintain()``: the daemon's own loop expires a queued job when its
    ttl ends, and leaves unconfirmed a vanished device's job when its grace ends,
    though nothing else happens to wake it."""
    grace = timeout(1.0)
    config = make_config(tmp_path, devices=[RAW], agents={"lease_s": timeout(0.5), "requeue_grace_s": grace})
    async with running(config) as daemon:
        agent = RawAgent(daemon)
        if what == "ttl":
            [job] = await enqueue(daemon, ttl_s=timeout(1.0))  # nobody online to take it
            due, final = job.expires, "expired"
        else:
            await agent.connect()
            [job] = await enqueue(daemon)
            await agent.next(p.Jobs)
            await agent.close()  # away, the job unanswered
            await wait_until(lambda: "raw" not in daemon.dispatcher.sessions, what="offline")
            due, final = daemon.dispatcher.health["raw"].offline_since + grace, "unconfirmed"
        await wait_until(lambda: _is(daemon, job, final), within=20, what=final)
        [moved] = [h for h in await daemon.store.history(job.id) if h["state"] == final]
        # On time: not at the next tick of a slow clock (MAINTAIN_IDLE_S is 30 s).
        assert due <= moved["at"] < due + timeout(3.0), (moved, due)


async def _is(daemon, job, state):
    return await state_of(daemon, job) == state


class _Phone:
    """A backend whose status the test sets."""
    capabilities = p.Capabilities(sms=True)

    def __init__(self) -> None:
        self.signal = 60

    async def execute(self, job, report) -> None:
        raise AssertionError("no job here")

    async def recover(self, job):
        return p.JOB_FAILED, None

    def status(self):
        return p.Status(at=time.time(), battery=90, signal=self.signal, network="registered")


class _Socket:
    def __init__(self) -> None:
        self.sent: list[p.Status] = []

    async def send(self, frame: str) -> None:
        self.sent.append(p.decode(frame))


async def test_an_agent_sends_its_status_when_it_changes_and_now_and_then_when_it_does_not(tmp_path, monkeypatch):
    phone, ws = _Phone(), _Socket()
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=phone,
                           journal=Journal(tmp_path / "j.jsonl"))
    try:
        await runtime._send_status(ws)  # the first on a connection: always
        await runtime._send_status(ws)  # the same reading, a new time: not sent
        assert [s.signal for s in ws.sent] == [60]
        phone.signal = 45
        await runtime._send_status(ws)
        await runtime._send_status(ws)
        assert [s.signal for s in ws.sent] == [60, 45]
        monkeypatch.setattr(runtime_module, "STATUS_REFRESH_S", 0.0)  # the refresh is due
        await runtime._send_status(ws)
        assert [s.signal for s in ws.sent] == [60, 45, 45]
    finally:
        runtime.journal.close()


def test_a_wandering_signal_makes_every_status_new(tmp_path):
    """bench.idle --changing-status: each reading differs from the one before."""
    radio = VirtualRadio(device_id="v", radio_log=tmp_path / "radio.jsonl", settings=RadioSettings(signal_wander=5))
    steady = VirtualRadio(device_id="s", radio_log=tmp_path / "steady.jsonl")
    try:
        assert [radio.status().signal for _ in range(4)] == [70, 75, 70, 75]
        assert {steady.status().signal for _ in range(3)} == {75}
    finally:
        radio.close()
        steady.close()
