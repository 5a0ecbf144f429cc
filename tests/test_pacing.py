"""Pacing: a device's caps per minute, hour and day counted in parts, random
gaps between sends, quiet hours in the recipient's zone, and sticky senders;
the pure rules first, then a real daemon with virtual phones."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import re
import time
from zoneinfo import ZoneInfo

import pytest
from api_util import radio, serving
from conftest import make_config, timeout, wait_until

from bridge.config import ConfigError, DeviceConfig, parse
from bridge.dispatch.dispatcher import PACING_MARGIN_S, Dispatcher, pacing_margin, quiet_until
from bridge.dispatch.session import DeviceSession, Pacer, Window
from bridge.store.model import Job, NewJob
from device_agents import protocol


def device(**kw) -> DeviceConfig:
    values = {"id": "d", "kind": "virtual", "account": "a", "max_per_minute": 0.0, **kw}
    return DeviceConfig(**values)


# -- the window ------------------------------------------------------------------------

def test_a_window_counts_parts_over_a_sliding_span():
    w = Window(60.0, 10)
    assert w.room(0.0) == 10
    w.record(0.0, 3)
    w.record(20.0, 6)
    assert w.room(30.0) == 1
    assert w.free_at(30.0, 1) == 30.0  # fits now
    assert w.free_at(30.0, 2) == 60.0  # when the 3 parts of t=0 leave
    assert w.free_at(30.0, 5) == 80.0  # the 6 of t=20 must leave too
    assert w.room(60.0) == 4  # t=0 left at exactly 60 s
    assert w.room(80.0) == 10


def test_no_cap_is_no_limit_and_keeps_nothing():
    w = Window(60.0, 0)
    for t in range(1000):
        w.record(float(t), 5)
    assert w.room(1000.0) >= 1 << 29 and not w._sent


# -- the pacer ---------------------------------------------------------------------------

def test_the_tightest_of_minute_hour_and_day_caps_decides():
    p = Pacer(device(max_per_minute=10, max_per_hour=25, max_per_day=40))
    p.record(0.0, [4, 6])  # 10 parts
    assert p.budget(1.0) == 0
    assert p.free_at(1.0) == 60.0
    p.record(60.0, [10])
    p.record(120.0, [5])  # 25 in the hour
    assert p.budget(180.0) == 0  # the minute has room, the hour not
    assert p.free_at(180.0) == 3600.0
    assert p.budget(3600.0) == 10  # 10 parts of t=0 left the hour: the minute allows 10
    p.record(3600.0, [10])
    p.record(3700.0, [5])  # 40 in the day
    assert p.budget(7300.0) == 0 and p.free_at(7300.0) == 86400.0


def test_need_asks_for_room_for_a_longer_message():
    p = Pacer(device(max_per_minute=10))
    p.record(0.0, [8])
    p.record(30.0, [1])
    p.need = 3  # the queue's head has 3 parts: 1 left is not enough
    assert p.budget(31.0) == 1
    assert p.free_at(31.0) == 60.0


def test_a_fresh_pacer_counts_the_sends_an_agent_tells_and_its_own_count_stands_after():
    now = 10_000.0
    fresh = Pacer(device(max_per_minute=5, max_per_hour=6))
    assert fresh.seed(now, [(3000.0, 2), (50.0, 2), (10.0, 1)])  # 1 in the minute's window, 5 in the hour's
    assert fresh.budget(now) == 1  # the hour: 6 - 5
    assert fresh.free_at(now) == now
    fresh.need = 2
    assert fresh.free_at(now) == now - 3000.0 + 3600.0  # the oldest leaves the hour
    counted = Pacer(device(max_per_minute=5))
    counted.record(now, [1])
    assert not counted.seed(now, [(10.0, 3)]) and counted.budget(now) == 4  # its own count stands
    assert not fresh.seed(now, [(5.0, 4)])  # once


def test_random_gaps_space_the_sends():
    p = Pacer(device(min_gap_s=2.0, max_gap_s=5.0), rng=random.Random(3))
    gaps = []
    now = 0.0
    for _ in range(200):
        assert p.budget(now) > 0
        p.record(now, [1])
        assert p.budget(now + 1.99) == 0
        gaps.append(p.next_at - now)
        now = p.next_at
    assert min(gaps) >= 2.0 and max(gaps) <= 5.0 and max(gaps) - min(gaps) > 2.0


def test_reconfigure_changes_the_caps_and_keeps_what_was_sent():
    d = device(max_per_minute=10)
    p = Pacer(d)
    p.record(0.0, [6])
    p.reconfigure(device(max_per_minute=5))
    assert p.budget(1.0) == 0 and p.free_at(1.0) == 60.0


# -- quiet hours -----------------------------------------------------------------------

def at(zone: str, *args: int) -> float:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone)).timestamp()


def test_quiet_hours_are_the_recipients_when_the_number_tells_its_zone():
    d = device(quiet_hours=(21 * 60, 8 * 60))
    # 22:30 in Paris: quiet until 08:00 the next morning, Paris time.
    assert quiet_until(d, "+33612345678", at("Europe/Paris", 2026, 3, 2, 22, 30), "UTC") == \
        at("Europe/Paris", 2026, 3, 3, 8, 0)
    # 07:59 in Paris: quiet until 08:00 the same day.
    assert quiet_until(d, "+33612345678", at("Europe/Paris", 2026, 3, 2, 7, 59), "UTC") == \
        at("Europe/Paris", 2026, 3, 2, 8, 0)
    assert quiet_until(d, "+33612345678", at("Europe/Paris", 2026, 3, 2, 12, 0), "UTC") is None
    # The same instant is daytime in New York: a New York number is sent.
    assert quiet_until(d, "+12125550123", at("Europe/Paris", 2026, 3, 2, 22, 30), "UTC") is None


def test_a_number_over_several_zones_uses_the_devices_zone_then_the_apis():
    moscow_night = at("Europe/Moscow", 2026, 3, 2, 23, 0)  # 20:00 UTC
    russian = "+79161234567"  # Russia spans eleven zones: the number does not tell
    assert quiet_until(device(quiet_hours=(22 * 60, 7 * 60), timezone="Europe/Moscow"), russian, moscow_night,
                       "UTC") == at("Europe/Moscow", 2026, 3, 3, 7, 0)
    assert quiet_until(device(quiet_hours=(22 * 60, 7 * 60)), russian, moscow_night, "UTC") is None
    # 20:00 UTC is 05:00 the next morning in Tokyo: quiet there until 07:00.
    assert quiet_until(device(quiet_hours=(22 * 60, 7 * 60)), russian, moscow_night, "Asia/Tokyo") == \
        at("Asia/Tokyo", 2026, 3, 3, 7, 0)
    assert quiet_until(device(), russian, moscow_night, "UTC") is None


def test_a_quiet_span_within_one_day():
    d = device(quiet_hours=(12 * 60, 14 * 60))
    assert quiet_until(d, "+33612345678", at("Europe/Paris", 2026, 3, 2, 13, 0), "UTC") == \
        at("Europe/Paris", 2026, 3, 2, 14, 0)
    assert quiet_until(d, "+33612345678", at("Europe/Paris", 2026, 3, 2, 14, 0), "UTC") is None


# -- the configuration -------------------------------------------------------------------

def config_with(**keys):
    return parse({"accounts": [{"login": "a", "access_key": "k"}],
                  "devices": [{"id": "d", "kind": "virtual", "account": "a", **keys}]})


def test_pacing_keys_are_read_and_checked():
    d = config_with(max_per_minute=30, max_per_hour=200, max_per_day=1000, min_gap_s=1, max_gap_s=4,
                    quiet_hours="21:30-08:00", timezone="Europe/Paris", sticky=True).devices[0]
    assert (d.max_per_hour, d.max_per_day, d.min_gap_s, d.max_gap_s) == (200, 1000, 1, 4)
    assert d.quiet_hours == (21 * 60 + 30, 8 * 60) and d.timezone == "Europe/Paris" and d.sticky


@pytest.mark.parametrize(("keys", "message"), [
    ({"quiet_hours": "21h-8h"}, "devices[0].quiet_hours: must be \"HH:MM-HH:MM\""),
    ({"quiet_hours": "25:00-08:00"}, "devices[0].quiet_hours"),
    ({"quiet_hours": "08:00-08:00"}, "is empty"),
    ({"max_per_hour": -1}, "devices[0].max_per_hour"),
    ({"min_gap_s": 5, "max_gap_s": 2}, "devices[0].max_gap_s: must not be shorter than min_gap_s"),
    ({"timezone": "Mars/Olympus"}, "devices[0].timezone"),
    ({"sticky": "yes"}, "devices[0].sticky"),
])
def test_bad_pacing_keys_name_the_key(keys, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_with(**keys)


# -- the dispatcher's timing ---------------------------------------------------------


class _SlowQueue:
    """A JobQueue whose claims take ``delay`` seconds (a store busy with a
    group commit) and find nothing."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def claim(self, *_args, **_kw):
        await asyncio.sleep(self.delay)
        return []

    async def next_due(self, _account):
        return None


class _Socket:
    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send(self, frame: str) -> None:
        self.frames.append(frame)


def _session(dev: DeviceConfig, *, keeps_caps: bool = False) -> DeviceSession:
    hello = protocol.Hello(device_id=dev.id, proof="", capabilities=protocol.Capabilities(keeps_caps=keeps_caps))
    return DeviceSession(device=dev, ws=_Socket(), hello=hello, window=8)


async def test_a_rounds_wait_counts_from_its_start_not_its_end(tmp_path):
    """A capped device whose room comes back in 0.5 s is asked again then,
    however long the round's claims for the other devices took."""
    capped, other = device(id="capped", max_per_minute=1.0), device(id="other", max_per_minute=0.0)
    config = make_config(tmp_path, devices=[
        {"id": d.id, "kind": "virtual", "account": "user@email.com", "max_per_minute": d.max_per_minute}
        for d in (capped, other)])
    capped, other = config.devices
    dispatcher = Dispatcher(config=config, store=_SlowQueue(0.3))  # type: ignore[arg-type]
    for dev in config.devices:
        dispatcher.sessions[dev.id] = _session(dev)
    free_at = time.time() + 0.5
    dispatcher.pacer(capped).record(free_at - 60.0, [1])
    wait = await dispatcher.dispatch_round()
    late = time.time() + wait - free_at
    assert late < 0.1, f"the next round would come {late:.3f} s after the cap's room"


class _Fleet:
    """A JobQueue with one message, recording when its claim was written."""

    def __init__(self) -> None:
        self.claimed_at: float | None = None

    async def claim(self, account, device_id, limit, **_kw):
        if self.claimed_at is not None:
            return []
        self.claimed_at = time.time()
        return [Job(id=1, account=account, id_sms_api="k", kind="sms", phone_number="+33611111111",
                    message="hi", url=None, priority=2, due=0.0, expires=1e12, state="dispatched",
                    reason=None, device_id=device_id, attempts=1, parts=1, encoding="gsm7",
                    report=True, created=0.0, updated=0.0)]

    async def next_due(self, _account):
        return None


class _SlowSocket(_Socket):
    async def send(self, frame: str) -> None:
        await asyncio.sleep(0.3)  # a socket whose buffer is full: the frame leaves late
        self.frames.append(frame)


@pytest.mark.parametrize("keeps_caps", [False, True])
async def test_a_send_counts_in_the_window_from_when_its_frame_left(tmp_path, keeps_caps):
    """Plus the margin for an agent that does not keep the caps; without it
    for one that does (it holds the job until the phone's own slot)."""
    config = make_config(tmp_path, devices=[
        {"id": "sim-1", "kind": "virtual", "account": "user@email.com", "max_per_minute": 1.0}])
    dev = config.devices[0]
    store = _Fleet()
    dispatcher = Dispatcher(config=config, store=store)  # type: ignore[arg-type]
    session = _session(dev, keeps_caps=keeps_caps)
    session.ws = _SlowSocket()
    dispatcher.sessions[dev.id] = session
    await dispatcher.dispatch_round()
    left = time.time()  # the frame has left by now
    assert session.ws.frames and store.claimed_at is not None
    assert pacing_margin(session) == (0.0 if keeps_caps else PACING_MARGIN_S)
    counted_at = dispatcher.pacer(dev).free_at(time.time()) - 60.0
    assert counted_at - pacing_margin(session) >= store.claimed_at + 0.25, \
        "counted from the claim, not from when the frame left"
    if keeps_caps:
        assert counted_at <= left, "counted later than the frame left: a margin"
    else:
        assert counted_at >= store.claimed_at + 0.25 + PACING_MARGIN_S


# -- in the daemon -------------------------------------------------------------------------

PHONE = {"kind": "virtual", "account": "user@email.com", "latency": 0.0, "jitter": 0.0, "delivery_delay": 0.0}


async def enqueue(daemon, items, priority=1):
    out = await daemon.store.enqueue("user@email.com", [
        NewJob(kind="sms", phone_number=number, message=text, parts=parts, id_sms_api=key, priority=priority)
        for key, number, text, parts in items])
    daemon.dispatcher.wake()
    return [e.job for e in out]


async def states(daemon, keys):
    return {k: (await daemon.store.get_job("user@email.com", k)).state for k in keys}


async def test_the_daemon_keeps_a_devices_minute_cap_in_parts(tmp_path):
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "max_per_minute": 5}])
    async with serving(config) as daemon:
        long_text = "x" * 300  # 2 parts
        await enqueue(daemon, [("a", "+33611111111", long_text, 2), ("b", "+33611111112", long_text, 2),
                               ("c", "+33611111113", long_text, 2), ("d", "+33611111114", "short", 1)])
        # 2 + 2 = 4 parts go; the third 2-part message would make 6 > 5; nothing jumps it.
        await wait_until(lambda: len(radio(daemon)) == 2, what="two messages on the radio")
        assert sum(r["parts"] for r in radio(daemon)) == 4
        assert await states(daemon, ["c", "d"]) == {"c": "queued", "d": "queued"}
        pacer = daemon.dispatcher.pacer(config.devices[0])
        await wait_until(lambda: pacer.need == 2, what="waiting for room for the 2-part message")
        # A new message (a wake) does not let the 1-part one jump the queue either.
        await enqueue(daemon, [("e", "+33611111115", "short", 1)])
        await wait_until(lambda: pacer.need == 2, what="the head still waiting for room")
        assert len(radio(daemon)) == 2


async def test_sticky_devices_keep_their_contacts(tmp_path):
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "sticky": True},
                                            {"id": "sim-2", **PHONE, "sticky": True}])
    async with serving(config) as daemon:
        contacts = [f"+3361234{i:04d}" for i in range(12)]
        await enqueue(daemon, [(f"first-{i}", n, "hello", 1) for i, n in enumerate(contacts)])
        await wait_until(lambda: len(radio(daemon, "sim-1")) + len(radio(daemon, "sim-2")) == 12, what="12 sent")
        first = {r["to"]: d for d in ("sim-1", "sim-2") for r in radio(daemon, d)}
        await enqueue(daemon, [(f"second-{i}", n, "again", 1) for i, n in enumerate(contacts)])
        await wait_until(lambda: len(radio(daemon, "sim-1")) + len(radio(daemon, "sim-2")) == 24, what="24 sent")
        second = {r["to"]: d for d in ("sim-1", "sim-2") for r in radio(daemon, d) if r["text"] == "again"}
        assert second == first


async def test_quiet_hours_give_a_job_back_until_they_end(tmp_path):
    now = dt.datetime.now(ZoneInfo("Europe/Paris"))
    start = (now.hour * 60 + now.minute - 60) % 1440  # quiet from an hour ago to an hour from now
    end = (start + 120) % 1440
    quiet = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "quiet_hours": quiet}])
    async with serving(config) as daemon:
        [paris, tokyo] = await enqueue(daemon, [("paris", "+33612345678", "hi", 1),
                                                ("tokyo", "+81312345678", "hi", 1)])
        await wait_until(lambda: [r["to"] for r in radio(daemon)] == ["+81312345678"], what="Tokyo's sent")

        async def deferred():
            job = await daemon.store.get_job("user@email.com", "paris")
            return job.state == "queued" and job.due > now.timestamp() + 1800

        await wait_until(deferred, what="the Paris job due after the quiet hours")
        job = await daemon.store.get_job("user@email.com", "paris")
        local_due = dt.datetime.fromtimestamp(job.due, ZoneInfo("Europe/Paris"))
        assert local_due.hour * 60 + local_due.minute == end and job.attempts == 0


async def test_the_last_place_of_a_window_is_kept_for_priority_2(tmp_path):
    # A phone whose radio is slow: the campaign fills all but one place of its window.
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "latency": 30.0}], agents={"window": 3})
    async with serving(config) as daemon:
        session = daemon.dispatcher.sessions["sim-1"]
        await daemon.store.enqueue("user@email.com", [NewJob(kind="sms", phone_number=f"+3361111{i:04d}",
                                                             message="campaign", priority=0) for i in range(10)])
        daemon.dispatcher.wake()
        await wait_until(lambda: session.inflight == 2, what="two campaign jobs in the phone")
        assert session.inflight == 2
        # A priority-1 message does not take it either.
        await enqueue(daemon, [("normal", "+33633333333", "hello", 1)])
        [code] = await enqueue(daemon, [("code", "+33622222222", "123456", 1)], priority=2)
        await wait_until(lambda: session.inflight == 3, what="the code in the last place")
        assert (await daemon.store.get_job("user@email.com", "code")).state == "dispatched"
        assert (await daemon.store.get_job("user@email.com", "normal")).state == "queued"


async def test_a_paced_agent_is_pushed_without_the_margin_and_never_exceeds_its_caps(tmp_path):
    """The daemon's virtual phone keeps the caps of its welcome: the bridge
    counts its pushes from when their frame left, the phone counts its sends
    when it asks its radio, later, and holds a job pushed before its own slot
    until that slot; no minute on the radio holds more than the cap."""
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "max_per_minute": 2}])
    async with serving(config) as daemon:
        session = daemon.dispatcher.sessions["sim-1"]
        runtime = daemon.kinds.get("virtual").runtimes["sim-1"]
        assert session.hello.capabilities.keeps_caps
        assert [w.cap for w in runtime.pacer.windows] == [2, 0, 0]  # from the welcome
        # The minute is full on both sides: the bridge counted two sends from when their frames
        # left, the phone the same two ``lag`` later, when it asked its radio.
        bridge_pacer = daemon.dispatcher.pacer(config.devices[0])
        now, lag = time.time(), timeout(0.15)
        bridge_free = (now + timeout(0.3), now + timeout(0.4))
        phone_free = tuple(at + lag for at in bridge_free)
        for at in bridge_free:
            bridge_pacer.record(at - 60.0, [1])
            runtime.pacer.record(at - 60.0 + lag, 1)
        await enqueue(daemon, [("a", "+33611111111", "one", 1), ("b", "+33611111112", "two", 1),
                               ("c", "+33611111113", "three", 1)])
        await wait_until(lambda: len(radio(daemon)) == 2, what="two messages on the radio")
        asked = {r["id_sms_api"]: r["asked"] for r in radio(daemon)}
        assert set(asked) == {"a", "b"} and (await states(daemon, ["c"])) == {"c": "queued"}
        # Each was begun at or after the phone's slot, not the bridge's.
        assert asked["a"] >= phone_free[0] and asked["b"] >= phone_free[1]
        # The bridge counted each from when its frame left, with no margin: before the phone asked.
        pushed = sorted(at for at, _parts in bridge_pacer.windows[0]._sent if at > now - 30.0)
        assert len(pushed) == 2
        assert all(p <= a for p, a in zip(pushed, sorted(asked.values()), strict=True)), (pushed, asked)
        # Never more than 2 parts in a minute, counting what was sent before.
        sends = sorted([at - 60.0 + lag for at in bridge_free] + list(asked.values()))
        assert all(sum(1 for t in sends if at - 60.0 < t <= at) <= 2 for at in sends)


async def test_new_caps_reach_an_agent_that_keeps_them_in_its_session(tmp_path):
    """Its welcome told the old caps: a reload that changes them tells it the
    new ones (a ``caps`` frame), its session kept, what it counted kept."""
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "max_per_minute": 5, "max_per_hour": 50}])
    async with serving(config) as daemon:
        first = daemon.dispatcher.sessions["sim-1"]
        runtime = daemon.kinds.get("virtual").runtimes["sim-1"]
        runtime.pacer.record(time.time(), 1)
        await daemon.reload(dataclasses.replace(config, devices=[
            dataclasses.replace(config.devices[0], max_per_minute=3.0, max_per_hour=40.0)]))
        await wait_until(lambda: [w.cap for w in runtime.pacer.windows] == [3, 40, 0], what="the new caps kept")
        assert daemon.dispatcher.sessions.get("sim-1") is first and not first.closed
        # The send counted before still counts: told from the hour's window (capped before and after),
        # which a slow reload on a busy machine cannot outlast as it can the minute's.
        assert [parts for _ago, parts in runtime.pacer.recent(time.time())] == [1]


async def test_a_daemon_that_has_counted_nothing_counts_what_the_agent_tells_in_its_hello(tmp_path):
    """After a restart the bridge has counted nothing for a device: the hello of an agent that
    keeps caps tells its sends still inside its windows, and the bridge counts them, so that it
    does not push what the phone would only hold or hand back."""
    config = make_config(tmp_path, devices=[{"id": "sim-1", **PHONE, "max_per_minute": 3}])
    async with serving(config) as daemon:
        runtime = daemon.kinds.get("virtual").runtimes["sim-1"]
        now = time.time()
        runtime.pacer.record(now - 20.0, 2)  # sent before "the restart": the minute has 1 part left
        first = daemon.dispatcher.sessions["sim-1"]
        daemon.dispatcher._pacers.pop("sim-1", None)  # the bridge's count, as a new daemon has it
        await first.ws.close()
        await wait_until(lambda: daemon.dispatcher.sessions.get("sim-1") not in (None, first),
                         within=15, what="the agent back with a new hello")
        pacer = daemon.dispatcher.pacer(config.devices[0])
        assert pacer.counted and pacer.budget(time.time()) == 1
        await enqueue(daemon, [("a", "+33611111111", "one", 1), ("b", "+33611111112", "two", 1)])
        await wait_until(lambda: len(radio(daemon)) == 1, what="the one part the minute had left")
        assert (await states(daemon, ["b"])) == {"b": "queued"}  # pushed neither early nor to be handed back
