"""JobQueue, what pacing relies on: a claim bounded in parts, sticky senders
(``avoid`` and ``sticky``), and jobs given back until later (``defer``)."""

from __future__ import annotations

import time

from bridge.core import jobstates as js
from bridge.store.model import NewJob


def sms(text: str = "hi", number: str = "+33612345678", **kw) -> NewJob:
    parts = 1 + len(text) // 160
    return NewJob(kind="sms", phone_number=number, message=text, parts=parts, **kw)


async def test_a_claim_takes_the_jobs_in_order_whose_parts_fit(store):
    await store.enqueue("a", [sms("one", id_sms_api="1"), sms("x" * 400, id_sms_api="3-parts"),
                              sms("two", id_sms_api="2")])
    # 1 + 3 = 4 parts > 3: the claim ends at the job that does not fit; nothing jumps the queue.
    assert [j.id_sms_api for j in await store.claim("a", "d1", 10, max_parts=3)] == ["1"]
    assert await store.claim("a", "d1", 10, max_parts=2) == []
    assert [j.id_sms_api for j in await store.claim("a", "d1", 10, max_parts=4)] == ["3-parts", "2"]
    assert await store.claim("a", "d1", 10, max_parts=0) == []


async def test_a_sticky_device_keeps_its_contacts_while_others_avoid_it(store):
    await store.enqueue("a", [sms(number="+33611111111", id_sms_api="c1-first")])
    [first] = await store.claim("a", "d1", 5, sticky=True)
    assert first.id_sms_api == "c1-first"
    await store.enqueue("a", [sms(number="+33611111111", id_sms_api="c1-second"),
                              sms(number="+33622222222", id_sms_api="c2")])
    # d2 avoids d1's contacts: it gets the other contact only.
    assert [j.id_sms_api for j in await store.claim("a", "d2", 5, avoid=["d1"])] == ["c2"]
    # d1 takes its own contact's next message.
    assert [j.id_sms_api for j in await store.claim("a", "d1", 5, avoid=["d2"], sticky=True)] == ["c1-second"]
    # When d1 is not available (not avoided), its contact goes to d2, and sticks to d2 from then on.
    await store.enqueue("a", [sms(number="+33611111111", id_sms_api="c1-third")])
    assert [j.id_sms_api for j in await store.claim("a", "d2", 5, sticky=True)] == ["c1-third"]
    await store.enqueue("a", [sms(number="+33611111111", id_sms_api="c1-fourth")])
    assert await store.claim("a", "d1", 5, avoid=["d2"]) == []
    # Senders are per account.
    await store.enqueue("b", [sms(number="+33611111111", id_sms_api="b1")])
    assert [j.id_sms_api for j in await store.claim("b", "d3", 5, avoid=["d1", "d2"])] == ["b1"]


async def test_a_deferred_job_waits_until_its_time_and_its_attempt_is_not_counted(store):
    [done] = await store.enqueue("a", [sms(id_sms_api="q")])
    [job] = await store.claim("a", "d1", 5)
    later = time.time() + 3600
    assert await store.defer("d2", [job.id], later, reason="quiet hours") == 0  # not d2's
    assert await store.defer("d1", [job.id], later, reason="quiet hours") == 1
    now = await store.get_job("a", "q")
    assert now.state == js.QUEUED and now.attempts == 0 and abs(now.due - later) < 1e-3
    assert now.device_id is None
    assert await store.claim("a", "d1", 5) == []  # not due yet
    assert await store.next_due("a") == now.due
    history = await store.history(done.job.id)
    assert [h["state"] for h in history] == [js.QUEUED, js.DISPATCHED, js.QUEUED]
    assert history[-1]["reason"] == "quiet hours"
    assert await store.defer("d1", [], later, reason="nothing") == 0


async def test_a_claim_can_ask_for_urgent_jobs_only(store):
    await store.enqueue("a", [sms(id_sms_api="campaign", priority=0), sms(id_sms_api="normal", priority=1)])
    assert await store.claim("a", "d1", 5, min_priority=2) == []
    await store.enqueue("a", [sms(id_sms_api="code", priority=2)])
    assert [j.id_sms_api for j in await store.claim("a", "d1", 5, min_priority=2)] == ["code"]
    assert [j.id_sms_api for j in await store.claim("a", "d1", 5, min_priority=1)] == ["normal"]
