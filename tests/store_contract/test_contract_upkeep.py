"""Upkeep: counts kept by counters agree with the jobs through every move and
a fold; retention purges settled jobs with their history, delivered or dead
events and old agent event ids, in batches, and nothing live."""

from __future__ import annotations

import time

from bridge.core import jobstates as js
from device_agents import protocol as p
from store_contract.contract_util import Reports, sms


async def test_counts_follow_every_move_and_survive_a_fold(store):
    out = await store.enqueue("a", [sms(priority=0), sms(priority=1), sms(priority=2), sms(priority=2)])
    assert await store.counts() == {(js.QUEUED, 0): 1, (js.QUEUED, 1): 1, (js.QUEUED, 2): 2}
    claimed = await store.claim("a", "d1", 3)
    reports = Reports()
    await store.apply_events("d1", "a", [reports.job(claimed[0].job_id, p.JOB_SENT),
                                         reports.job(claimed[1].job_id, p.JOB_REJECTED, "busy")])
    expected = {(js.SENT, 2): 1, (js.QUEUED, 2): 1, (js.DISPATCHED, 1): 1, (js.QUEUED, 0): 1}
    assert claimed[0].priority == 2 and claimed[1].priority == 2 and claimed[2].priority == 1
    assert await store.counts() == expected
    await store.fold_counters()
    assert await store.counts() == expected
    await store.expire(time.time() + 10 * 86400)
    assert await store.counts() == {(js.SENT, 2): 1, (js.EXPIRED, 2): 1, (js.DISPATCHED, 1): 1,
                                    (js.EXPIRED, 0): 1}
    assert len(out) == 4


async def test_outbox_counts_come_from_counters_and_a_settled_event_counts_once(store):
    await store.enqueue("a", [sms(id_sms_api="m1"), sms(id_sms_api="m2")])  # two sms_queued events
    rows = await store.claim_outbox(["a"], 10, lease_s=30)
    assert await store.outbox_counts() == {"pending": 2, "delivered": 0, "dead": 0}
    await store.settle_outbox(delivered=[(rows[0].id, 1.0)], dead=[(rows[1].id, "gone")])
    await store.settle_outbox(delivered=[(rows[0].id, 2.0)])  # settled again (a lease ran out): once
    assert await store.outbox_counts() == {"pending": 0, "delivered": 1, "dead": 1}
    await store.fold_counters()
    assert await store.outbox_counts() == {"pending": 0, "delivered": 1, "dead": 1}


async def test_purge_takes_settled_history_in_batches_and_leaves_the_live(store):
    out = await store.enqueue("a", [sms(id_sms_api=f"old{i}") for i in range(5)] + [sms(id_sms_api="live")])
    jobs = await store.claim("a", "d1", 6)
    reports = Reports()
    settled = [j for j in jobs if j.id_sms_api != "live"]
    await store.apply_events("d1", "a", [reports.job(j.job_id, p.JOB_SENT) for j in settled]
                             + [reports.job(j.job_id, p.JOB_DELIVERED) for j in settled])
    rows = await store.claim_outbox(["a"], 100, lease_s=30)
    await store.settle_outbox(delivered=[(r.id, time.time()) for r in rows])
    before = await store.outbox_counts()
    cutoff = time.time() + 1
    gone = 0
    while (n := await store.purge(cutoff, limit=2)) > 0:
        assert n <= 2 * 3  # at most the limit of each kind in one call
        gone += n
    assert gone > 0
    for j in settled:
        assert await store.get_job("a", j.id_sms_api) is None and await store.history(j.id) == []
    live = await store.get_job("a", "live")
    assert live is not None and live.state == js.DISPATCHED and await store.history(live.id)
    assert await store.counts() == {(js.DISPATCHED, 1): 1}
    after = await store.outbox_counts()
    assert after["delivered"] == 0 and before["delivered"] == len(rows)
    # the agents' event ids are gone too: the same ids are new again
    assert (await store.apply_events("d1", "a", [reports.job(live.job_id, p.JOB_SENT)])).acked
    assert len(out) == 6


async def test_purge_keeps_what_is_recent(store):
    [e] = await store.enqueue("a", [sms()])
    [job] = await store.claim("a", "d1", 1)
    await store.apply_events("d1", "a", [Reports().job(job.job_id, p.JOB_FAILED, "no")])
    assert await store.purge(time.time() - 3600) == 0
    assert (await store.get_job("a", e.job.id_sms_api)).state == js.FAILED
