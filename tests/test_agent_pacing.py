"""The caps an agent keeps itself (device_agents/pacing.py, the runtime's
workers): windows in parts, a job held until its parts fit, counted when the
device is asked; a higher priority goes first while one is held; never more
than the caps; the lease."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from conftest import timeout, wait_until

from device_agents import protocol as p
from device_agents.journal import Journal
from device_agents.pacing import CapPacer, CapWindow
from device_agents.runtime import AgentRuntime

# -- the windows ---------------------------------------------------------------------------


def test_a_window_counts_parts_and_frees_them_after_its_span():
    w = CapWindow(60.0, 5)
    w.record(0.0, 3)
    w.record(10.0, 2)
    assert w.free_at(20.0, 1) == 60.0  # the 3 parts of t=0 must leave
    assert w.free_at(60.0, 3) == 60.0  # they left at exactly 60 s (a sliding window, as SmsUsageMonitor)
    assert w.free_at(60.0, 4) == 70.0  # the 2 of t=10 too


def test_the_tightest_of_minute_hour_and_day_decides():
    pacer = CapPacer(p.Caps(per_minute=4, per_hour=6, per_day=8))
    pacer.record(0.0, 4)
    assert pacer.free_at(1.0, 1) == 60.0
    pacer.record(60.0, 2)  # 6 in the hour
    assert pacer.free_at(120.0, 1) == 3600.0  # the minute has room, the hour not
    pacer.record(3600.0, 2)  # 8 in the day
    assert pacer.free_at(3700.0, 1) == 86400.0
    assert pacer.fits_ever(4) and not pacer.fits_ever(5)


def test_no_caps_is_no_limit_and_new_caps_count_from_then_on():
    pacer = CapPacer(None)
    for t in range(100):
        pacer.record(float(t), 3)
    assert pacer.free_at(100.0, 50) == 100.0 and pacer.fits_ever(10_000)
    pacer.configure(p.Caps(per_minute=2))
    pacer.record(100.0, 2)
    assert pacer.free_at(101.0, 1) == 160.0
    pacer.configure(p.Caps(per_minute=3))  # raised: the sends already counted stay
    assert pacer.free_at(101.0, 1) == 101.0 and pacer.free_at(101.0, 2) == 160.0


# -- the runtime keeps them ------------------------------------------------------------------

class _Radio:
    """A backend that notes when it was asked to send each job (what a phone
    counts), and sends at once."""
    capabilities = p.Capabilities(sms=True, calls=True)

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    async def execute(self, job, report) -> None:
        self.asked.append((job.job_id, time.time()))
        report(job.job_id, p.JOB_SENT)

    async def recover(self, job):
        return p.JOB_FAILED, None

    def status(self):
        return None


@contextlib.asynccontextmanager
async def agent(tmp_path, caps: p.Caps, *, workers: int = 1, lease_s: float = 60.0,
                sent: tuple[tuple[float, int], ...] = ()) -> AsyncIterator[tuple[AgentRuntime, _Radio]]:
    """A runtime told ``caps`` (as its welcome would), having sent ``sent``
    ((at, parts)), with ``workers`` workers running."""
    radio = _Radio()
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=radio,
                           journal=Journal(tmp_path / "j.jsonl"), workers=workers)
    runtime.lease_s = lease_s
    runtime.pacer.configure(caps)
    for at, parts in sent:
        runtime.pacer.record(at, parts)
    tasks = [asyncio.create_task(runtime._worker()) for _ in range(workers)]
    try:
        yield runtime, radio
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.aclose()


def push(runtime: AgentRuntime, *jobs: p.Job) -> None:
    runtime._on_frame(p.decode(p.encode(p.Jobs(jobs=jobs)), allowed=p.BRIDGE_TO_AGENT))


def sms(job_id: str, parts: int = 1, priority: int = 1) -> p.SendSms:
    return p.SendSms(job_id=job_id, to="+33612345678", text="x" * (160 if parts == 1 else 153 * parts),
                     priority=priority)


def test_the_runtime_hello_says_it_keeps_caps(tmp_path):
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=_Radio(),
                           journal=Journal(tmp_path / "j.jsonl"))
    hello = runtime._hello(p.Challenge(nonce="ab" * 32))
    assert hello.capabilities.keeps_caps and hello.capabilities.calls  # the backend's, plus keeps_caps
    runtime.journal.close()


def test_the_hello_tells_the_sends_inside_the_longest_capped_window(tmp_path):
    """What the agent counted goes with its hello, as ages (no clock has to agree), so that a
    bridge that has just started counts them too."""
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=_Radio(),
                           journal=Journal(tmp_path / "j.jsonl"))
    now = time.time()
    assert runtime._hello(p.Challenge(nonce="ab" * 32)).sent == ()  # no caps: nothing counted
    runtime.pacer.configure(p.Caps(per_minute=5, per_hour=50))
    for ago, parts in ((4000.0, 1), (1800.0, 2), (30.0, 1), (1.0, 3)):
        runtime.pacer.record(now - ago, parts)
    sent = runtime._hello(p.Challenge(nonce="ab" * 32)).sent
    assert [parts for _, parts in sent] == [2, 1, 3]  # inside the hour, oldest first; not the one before it
    assert [round(ago) for ago, _ in sent] == [1800, 30, 1]
    assert len(runtime.pacer.recent(now, limit=2)) == 2 and runtime.pacer.recent(now, limit=2)[-1][1] == 3
    runtime.journal.close()


async def test_a_held_job_waits_for_its_slot_and_a_higher_priority_goes_first(tmp_path):
    # A minute cap of 2: one place frees in 0.3 s, the next in 30 s.
    now = time.time()
    slot = now + timeout(0.3)
    async with agent(tmp_path, p.Caps(per_minute=2), sent=((slot - 60.0, 1), (now - 30.0, 1))) as (runtime, radio):
        push(runtime, sms("campaign", priority=0))
        await wait_until(lambda: not runtime._queued.is_set(), what="the campaign job held")
        assert radio.asked == []
        push(runtime, sms("code", priority=2))  # a one-time code comes while the campaign job is held
        await wait_until(lambda: radio.asked, what="a job begun")
        [(first, asked)] = radio.asked
        assert first == "code" and asked >= slot
        assert runtime.journal.state_of("campaign") == p.JOB_ACCEPTED  # still held: its slot is 30 s away


async def test_a_call_is_not_an_sms_part(tmp_path):
    async with agent(tmp_path, p.Caps(per_minute=1), sent=((time.time() - 1.0, 1),)) as (runtime, radio):
        push(runtime, sms("held"), p.Dial(job_id="call", to="+33612345678"))
        await wait_until(lambda: radio.asked, what="the call placed")
        assert [j for j, _ in radio.asked] == ["call"]


async def test_the_caps_are_never_exceeded_with_several_workers(tmp_path):
    """Four workers, 2-part and 1-part jobs, a cap of 5 parts a minute full
    of sends that leave it a few parts at a time: what the radio was asked, with what was
    sent before, never holds more than 5 parts in any minute."""
    step, now = timeout(0.1), time.time()
    before = ((now + step - 60.0, 2), (now + 2 * step - 60.0, 1), (now + 3 * step - 60.0, 2))
    async with agent(tmp_path, p.Caps(per_minute=5), workers=4, sent=before) as (runtime, radio):
        sizes = {"a": 2, "b": 1, "c": 1, "d": 1}  # the 5 parts that free in 0.1 to 0.3 s
        push(runtime, *(sms(j, n) for j, n in sizes.items()))
        await wait_until(lambda: len(radio.asked) == 4, what="four jobs begun")
        sends = sorted([*before, *((at, sizes[j]) for j, at in radio.asked)])
        for at, _n in sends:
            inside = sum(n for t, n in sends if at - 60.0 < t <= at)
            assert inside <= 5, f"{inside} parts in the minute ending at {at - now:+.3f} s"
        assert [j for j, _ in radio.asked] == list(sizes)  # in order: nothing jumped a held head
        # Each counted once the radio had been asked, never before: the phone's window ends first.
        counted = [at for at, _n in runtime.pacer.windows[0]._sent][-4:]
        assert all(c >= at for c, (_j, at) in zip(counted, radio.asked, strict=True))
        # No cap of 5 lets a 6-part message through: rejected, back to the bridge's queue.
        push(runtime, sms("long", 6))
        await wait_until(lambda: runtime.journal.state_of("long") == p.JOB_REJECTED, what="the 6-part job rejected")


async def test_a_job_whose_slot_comes_after_its_lease_is_rejected_at_once(tmp_path):
    async with agent(tmp_path, p.Caps(per_minute=1), lease_s=5.0, sent=((time.time() - 30.0, 1),)) as (runtime, radio):
        push(runtime, sms("late"))
        await wait_until(lambda: runtime.journal.state_of("late") == p.JOB_REJECTED,
                         within=2.0, what="rejected long before its lease ends")
        assert radio.asked == []
    # One whose slot comes within its lease waits for it (the bridge pushed it a little early).
    async with agent(tmp_path, p.Caps(per_minute=1), lease_s=5.0,
                     sent=((time.time() + timeout(0.2) - 60.0, 1),)) as (runtime, radio):
        push(runtime, sms("early"))
        await wait_until(lambda: radio.asked, what="begun at its slot")
        assert runtime.journal.state_of("early") == p.JOB_SENT


@pytest.mark.parametrize("caps", [None, p.Caps(per_minute=25, per_hour=200)])
async def test_the_welcome_tells_the_caps_kept(tmp_path, caps):
    """A welcome's caps become the runtime's (none: nothing to keep)."""
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=_Radio(),
                           journal=Journal(tmp_path / "j.jsonl"))
    welcome = p.decode(p.encode(p.Welcome(device_id="d", caps=caps)), allowed=p.BRIDGE_TO_AGENT)
    assert isinstance(welcome, p.Welcome)
    runtime.pacer.configure(welcome.caps)
    expected = [25, 200, 0] if caps else [0, 0, 0]
    assert [w.cap for w in runtime.pacer.windows] == expected
    runtime.journal.close()
