"""JobQueue: enqueue and idempotency, claim order, agents' reports through the
state table (unconfirmed included), reconcile, stranding, journals and
incarnations, expiry, reading."""

from __future__ import annotations

import asyncio
import time

from bridge.core import jobstates as js
from bridge.store.model import NewJob
from device_agents import protocol as p
from store_contract.contract_util import Reports, assert_history_follows_the_table, outbox_events, sms, states

# -- enqueue -------------------------------------------------------------------------


async def test_enqueue_answers_each_job_in_order_with_a_generated_key_when_none_is_given(store):
    out = await store.enqueue("a", [sms(text="one"), sms(id_sms_api="mine", text="two"), sms(text="three")])
    assert [e.job.message for e in out] == ["one", "two", "three"] and all(e.created for e in out)
    assert out[1].job.id_sms_api == "mine"
    generated = [out[0].job.id_sms_api, out[2].job.id_sms_api]
    assert all(len(k) == 15 and k.isalnum() for k in generated) and generated[0] != generated[1]
    for e in out:
        assert e.job.state == js.QUEUED and e.job.account == "a" and e.job.attempts == 0
        assert await store.get_job("a", e.job.id_sms_api) == e.job
        assert await states(store, e.job.id) == [js.QUEUED]


async def test_idempotency_key_is_per_account(store):
    [first] = await store.enqueue("a", [sms(id_sms_api="k1", text="one")])
    [again, other] = await store.enqueue("a", [sms(id_sms_api="k1", text="two"), sms(id_sms_api="k2")])
    [elsewhere] = await store.enqueue("b", [sms(id_sms_api="k1")])
    assert first.created and not again.created and other.created and elsewhere.created
    assert again.job.id == first.job.id and again.job.message == "one"
    assert elsewhere.job.id != first.job.id


async def test_a_key_twice_in_one_batch_makes_one_job(store):
    out = await store.enqueue("a", [sms(id_sms_api="twice", text="first"), sms(id_sms_api="twice", text="second")])
    assert [e.created for e in out] == [True, False]
    assert out[0].job == out[1].job and out[1].job.message == "first"
    assert sum(n for (state, _), n in (await store.counts()).items() if state == js.QUEUED) == 1


async def test_a_generated_key_meeting_a_taken_one_is_stored_under_another(store, monkeypatch):
    """A generated id_sms_api that another job already has (forced here; the time in its first
    characters makes it as good as impossible): the message is stored under a new key, the other
    job is left alone, nothing is refused, and the answer names the key it is stored under."""
    from bridge.store import shaping  # where a batch's keys are generated
    [first] = await store.enqueue("a", [sms(text="first")])
    real = shaping.new_id_sms_apis
    calls: list[int] = []

    def colliding(count: int) -> list[str]:
        calls.append(count)
        return [first.job.id_sms_api, *real(count - 1)] if len(calls) == 1 else real(count)
    monkeypatch.setattr(shaping, "new_id_sms_apis", colliding)
    out = await store.enqueue("a", [sms(text="second"), sms(id_sms_api="given", text="third")])
    assert [e.created for e in out] == [True, True], calls
    assert out[0].job.id_sms_api not in (first.job.id_sms_api, "given") and out[0].job.message == "second"
    assert out[1].job.id_sms_api == "given"
    for e in out:
        assert await store.get_job("a", e.job.id_sms_api) == e.job
        assert await states(store, e.job.id) == [js.QUEUED]
    assert (await store.get_job("a", first.job.id_sms_api)).message == "first"


async def test_a_large_batch_is_stored_whole(store):
    out = await store.enqueue("a", [sms(id_sms_api=f"bulk{i}") for i in range(1234)])
    assert len({e.job.id for e in out}) == 1234
    assert (await store.counts())[(js.QUEUED, 1)] == 1234
    # Each answer is the job as stored under its key, its id included (across the statements' chunks).
    for e in out[::37] + out[-3:]:
        assert await store.get_job("a", e.job.id_sms_api) == e.job


async def test_a_new_job_s_history_begins_queued_at_its_creation(store):
    [e] = await store.enqueue("a", [sms(text="first")])
    assert await store.history(e.job.id) == [{"state": js.QUEUED, "at": e.job.created, "device_id": None,
                                             "reason": None}]
    await store.cancel("a", e.job.id_sms_api, reason="not wanted")
    assert [(h["state"], h["reason"]) for h in await store.history(e.job.id)] == [
        (js.QUEUED, None), (js.CANCELLED, "not wanted")]
    assert await store.history(e.job.id + 1000) == []


async def test_the_job_fields_are_kept(store):
    due = time.time() + 60
    [e] = await store.enqueue("a", [NewJob(kind="sms", phone_number="+33611111111", message="€ text", priority=2,
                                           due=due, ttl_s=100, parts=2, encoding="ucs2", report=False)])
    job = await store.get_job("a", e.job.id_sms_api)
    assert (job.phone_number, job.message, job.priority, job.parts, job.encoding, job.report) == (
        "+33611111111", "€ text", 2, 2, "ucs2", False)
    assert job.due == due and job.expires == due + 100
    assert await store.get_job("b", e.job.id_sms_api) is None  # another account's key


# -- claim ---------------------------------------------------------------------------


async def test_a_link_or_a_sealed_text_is_kept_for_its_job_only(store):
    """Jobs with a url or a sealed text among plain ones, in and across the chunks a batch is
    written in: each job keeps its own, and the others have none."""
    batch = [sms(id_sms_api=f"k{i}", text=f"text {i}") for i in range(1100)]
    batch[3] = NewJob(kind="sms", phone_number="+33611111111", message="see https://x.test/l/abc", id_sms_api="k3",
                      url="https://example.com/offer", link_code="abc")
    batch[777] = NewJob(kind="sms", phone_number="+33611111112", message="code ******", id_sms_api="k777",
                        sealed=b"sealed-bytes")
    out = await store.enqueue("a", batch)
    assert all(e.created for e in out)
    stored = {i: await store.get_job("a", f"k{i}") for i in (0, 3, 4, 499, 500, 776, 777, 778, 1099)}
    assert stored[3].url == "https://example.com/offer" and stored[3].sealed is None
    assert stored[777].sealed == b"sealed-bytes" and stored[777].url is None
    assert all(job.url is None and job.sealed is None for i, job in stored.items() if i not in (3, 777))
    assert [out[i].job for i in stored] == list(stored.values())  # the answers are the jobs as stored


async def test_claim_order_is_priority_then_date_then_arrival(store):
    now = time.time()
    await store.enqueue("a", [sms(id_sms_api="low", priority=0), sms(id_sms_api="future", priority=2, due=now + 3600),
                              sms(id_sms_api="high", priority=2), sms(id_sms_api="normal"),
                              sms(id_sms_api="high-older", priority=2, due=now - 60),
                              sms(id_sms_api="normal-2")])
    jobs = await store.claim("a", "d1", 10)
    assert [j.id_sms_api for j in jobs] == ["high-older", "high", "normal", "normal-2", "low"]
    assert all(j.state == js.QUEUED for j in jobs)  # the rows as they were claimed
    job = await store.get_job("a", "high")
    assert job.state == js.DISPATCHED and job.device_id == "d1" and job.attempts == 1
    assert await states(store, job.id) == [js.QUEUED, js.DISPATCHED]
    assert await store.claim("a", "d1", 10) == []  # the future one waits
    assert await store.claim("b", "d1", 10) == []  # other accounts' jobs are not ours
    assert await store.next_due("a") == (await store.get_job("a", "future")).due


async def test_claim_takes_the_limit_and_the_kinds_asked_for(store):
    await store.enqueue("a", [sms(id_sms_api="s1"), NewJob(kind="call", phone_number="+33612345678",
                                                           id_sms_api="c1"), sms(id_sms_api="s2")])
    assert await store.claim("a", "d1", 0) == []
    assert [j.id_sms_api for j in await store.claim("a", "d1", 5, kinds=("call",))] == ["c1"]
    assert [j.id_sms_api for j in await store.claim("a", "d1", 1, kinds=("sms",))] == ["s1"]
    assert await store.next_due("a") is not None
    await store.claim("a", "d1", 5)
    assert await store.next_due("a") is None


async def test_concurrent_claims_never_share_a_job(store):
    await store.enqueue("a", [sms(id_sms_api=str(i)) for i in range(100)])
    results = await asyncio.gather(*(store.claim("a", f"d{i}", 7) for i in range(20)))
    ids = [j.id for jobs in results for j in jobs]
    assert len(ids) == len(set(ids)) == 100


async def test_an_expired_job_is_not_claimed(store):
    await store.enqueue("a", [sms(id_sms_api="old", due=time.time() - 100, ttl_s=0)])
    assert await store.claim("a", "d1", 5) == []


# -- what devices report ---------------------------------------------------------------


async def claimed(store, n=1, device="d1", journal="", **kw):
    await store.enqueue("a", [sms(**kw) for _ in range(n)])
    return await store.claim("a", device, n, journal=journal)


async def test_reports_move_jobs_through_the_table_with_history(store):
    [job] = await claimed(store)
    r = Reports()
    out = await store.apply_events("d1", "a", [r.job(job.job_id, "accepted"), r.job(job.job_id, "delivered")])
    assert out.acked == ["e1", "e2"] and out.finished == 1 and out.requeued == 0
    # the delivery report came while the job was dispatched: it goes through sent first
    assert await states(store, job.id) == [js.QUEUED, js.DISPATCHED, js.SENT, js.DELIVERED]
    # a final job takes nothing more
    await store.apply_events("d1", "a", [r.job(job.job_id, "failed")])
    assert (await store.get_job("a", job.id_sms_api)).state == js.DELIVERED
    await assert_history_follows_the_table(store, job.id)


async def test_an_event_is_applied_once_and_acked_every_time(store):
    [job] = await claimed(store)
    sent = Reports().job(job.job_id, "sent")
    first = await store.apply_events("d1", "a", [sent])
    again = await store.apply_events("d1", "a", [sent])
    assert first.acked == again.acked == [sent.event_id]
    assert first.finished == 1 and again.finished == 0
    assert await states(store, job.id) == [js.QUEUED, js.DISPATCHED, js.SENT]


async def test_reports_about_unknown_or_foreign_jobs_change_nothing(store):
    [job] = await claimed(store, device="d1")
    r = Reports()
    out = await store.apply_events("d2", "a", [r.job(job.job_id, "sent"), r.job("999999", "sent"), r.job("x", "sent")])
    assert out.acked == ["e1", "e2", "e3"] and out.finished == 0
    assert (await store.get_job("a", job.id_sms_api)).state == js.DISPATCHED


async def test_failure_keeps_its_reason(store):
    [job] = await claimed(store)
    await store.apply_events("d1", "a", [Reports().job(job.job_id, "failed", reason="CMS ERROR 38")])
    got = await store.get_job("a", job.id_sms_api)
    assert got.state == js.FAILED and got.reason == "CMS ERROR 38"
    assert (await store.history(job.id))[-1]["reason"] == "CMS ERROR 38"


async def test_a_rejected_job_goes_back_to_the_queue_until_its_attempts_run_out(store):
    [job] = await claimed(store)
    r = Reports()
    out = await store.apply_events("d1", "a", [r.job(job.job_id, "rejected", reason="busy")], max_attempts=2)
    assert out.requeued == 1 and out.finished == 1
    back = await store.get_job("a", job.id_sms_api)
    assert back.state == js.QUEUED and back.device_id is None and "busy" in back.reason
    [again] = await store.claim("a", "d2", 1)
    assert again.id == job.id and again.attempts == 1
    # the first device's late word no longer counts
    await store.apply_events("d1", "a", [r.job(job.job_id, "sent")])
    assert (await store.get_job("a", job.id_sms_api)).state == js.DISPATCHED
    out = await store.apply_events("d2", "a", [r.job(job.job_id, "rejected")], max_attempts=2)
    assert out.requeued == 0 and out.finished == 1
    final = await store.get_job("a", job.id_sms_api)
    assert final.state == js.FAILED and "rejected 2 times" in final.reason
    await assert_history_follows_the_table(store, job.id)


async def test_unconfirmed_leaves_the_window_and_is_never_given_back(store):
    jobs = await claimed(store, n=2)
    job, other = jobs
    out = await store.apply_events("d1", "a", [Reports().job(job.job_id, p.JOB_UNCONFIRMED, reason="link lost")])
    assert out.finished == 1 and out.requeued == 0
    got = await store.get_job("a", job.id_sms_api)
    assert got.state == js.UNCONFIRMED and got.device_id == "d1"
    assert [j.id for j in await store.in_flight("d1")] == [other.id]
    assert await store.reconcile("d1", "", []) == [await store.get_job("a", other.id_sms_api)]
    # its link lost for good: the dispatched job waits for it as unconfirmed too; the one it
    # reported unconfirmed is not the link's: it never becomes the device's again
    assert await store.strand_device("d1", time.time() + 60, reason="device gone") == 1
    assert (await store.get_job("a", other.id_sms_api)).state == js.UNCONFIRMED
    assert [j.id for j in await store.reconcile("d1", "", [])] == [other.id]
    assert (await store.get_job("a", job.id_sms_api)).state == js.UNCONFIRMED
    # nor is it expired, nor rejected back to the queue
    assert await store.expire(time.time() + 10 * 86400) == 0
    await store.apply_events("d1", "a", [Reports().job(job.job_id, "rejected")])
    assert (await store.get_job("a", job.id_sms_api)).state == js.UNCONFIRMED


async def test_a_later_report_settles_an_unconfirmed_job(store):
    delivered, failed = await claimed(store, n=2)
    r = Reports()
    await store.apply_events("d1", "a", [r.job(delivered.job_id, "unconfirmed"), r.job(failed.job_id, "unconfirmed")])
    out = await store.apply_events("d1", "a", [r.job(delivered.job_id, "delivered"), r.job(failed.job_id, "failed")])
    assert out.finished == 0  # they had left the window already
    assert await states(store, delivered.id) == [js.QUEUED, js.DISPATCHED, js.UNCONFIRMED, js.SENT, js.DELIVERED]
    assert await states(store, failed.id) == [js.QUEUED, js.DISPATCHED, js.UNCONFIRMED, js.FAILED]
    for job in (delivered, failed):
        await assert_history_follows_the_table(store, job.id)
    # The CRM hears "unconfirmed" (JSON form), then what settled it.
    kinds = [(e["id_sms_api"], e["kind"]) for e in await outbox_events(store, "a")
             if e["kind"] in ("sms_unconfirmed", "sms_sent", "sms_delivered", "sms_failed")]
    assert kinds == [(delivered.id_sms_api, "sms_unconfirmed"), (failed.id_sms_api, "sms_unconfirmed"),
                     (delivered.id_sms_api, "sms_sent"), (delivered.id_sms_api, "sms_delivered"),
                     (failed.id_sms_api, "sms_failed")]


async def test_reconcile_pushes_again_only_what_the_ledger_does_not_know(store):
    jobs = await claimed(store, n=3)
    ledger = [p.LedgerEntry(job_id=jobs[1].job_id, state="accepted")]
    again = await store.reconcile("d1", "", ledger)
    assert [j.id for j in again] == [jobs[0].id, jobs[2].id]
    assert all(j.state == js.DISPATCHED and j.device_id == "d1" for j in again)
    assert await store.reconcile("d2", "", []) == []


async def test_a_report_of_an_earlier_dispatch_to_the_same_device_does_not_count(store):
    """The device's ledger says it rejected the job (it restarted before sending): the job
    goes back to the queue and may come back to the same device. The rejection's event,
    still in the device's outbox, names the dispatch it was about, and does not send the
    new dispatch back to the queue (another device would send it too)."""
    [job] = await claimed(store)
    assert await store.reconcile("d1", "", [p.LedgerEntry(job_id=job.job_id, state="rejected")]) == []
    [again] = await store.claim("a", "d1", 1)
    assert again.id == job.id
    r = Reports()
    out = await store.apply_events("d1", "a", [r.job(job.job_id, "rejected", "restarted", attempt=1)])
    assert out.requeued == 0 and out.finished == 0 and len(out.acked) == 1  # acked: the agent forgets it
    current = await store.get_job("a", job.id_sms_api)
    assert current.state == js.DISPATCHED and current.device_id == "d1" and current.attempts == 2
    await store.apply_events("d1", "a", [r.job(job.job_id, "sent", attempt=2)])
    assert (await store.get_job("a", job.id_sms_api)).state == js.SENT
    # An agent that names no dispatch (older) is taken at its word, as before.
    [other] = await claimed(store)
    out = await store.apply_events("d1", "a", [r.job(other.job_id, "rejected", "busy")])
    assert out.requeued == 1


async def test_stranding_takes_only_jobs_dispatched_before_the_cutoff(store):
    [early] = await claimed(store)
    cutoff = time.time() + 1e-3
    while time.time() <= cutoff:  # the clock must move past the cutoff (no sleep needed: it is a millisecond)
        pass
    [late] = await claimed(store)
    assert set(await store.devices_in_flight()) == {"d1"}
    assert await store.strand_device("d1", cutoff, reason="gone") == 1
    assert (await store.get_job("a", early.id_sms_api)).state == js.UNCONFIRMED
    assert (await store.get_job("a", late.id_sms_api)).state == js.DISPATCHED
    assert (await store.history(early.id))[-1]["reason"] == "gone"
    assert await store.in_flight("d1") == [await store.get_job("a", late.id_sms_api)]


async def test_a_stranded_job_is_settled_by_its_device_when_it_comes_back(store):
    """Link down past the grace: unconfirmed, never another device's. Back with the
    same journal: its ledger settles them, and the one it never got is pushed to it again."""
    sent, held, lost = await claimed(store, n=3, journal="j1")
    assert await store.strand_device("d1", time.time() + 60, reason="link down") == 3
    assert await store.claim("a", "d2", 10) == []
    ledger = [p.LedgerEntry(job_id=sent.job_id, state="sent"), p.LedgerEntry(job_id=held.job_id, state="accepted")]
    again = await store.reconcile("d1", "j1", ledger)
    assert [j.id for j in again] == [lost.id] and again[0].state == js.DISPATCHED
    # what its ledger says is written at once; its events (sent again) change nothing more
    assert [j.id for j in await store.in_flight("d1")] == [held.id, lost.id]
    r = Reports()
    out = await store.apply_events("d1", "a", [r.job(sent.job_id, "sent"), r.job(held.job_id, "rejected")],
                                   journal="j1")
    assert out.finished == 1 and out.requeued == 1  # it never began the held one (its lease lapsed)
    assert [h["state"] for h in await store.history(sent.id)] == [
        js.QUEUED, js.DISPATCHED, js.UNCONFIRMED, js.DISPATCHED, js.SENT]
    assert (await store.get_job("a", held.id_sms_api)).state == js.QUEUED
    for job in (sent, held, lost):
        await assert_history_follows_the_table(store, job.id)


async def test_a_ledger_settles_jobs_whose_events_were_acked_long_ago(store):
    """As after a restored backup: the store holds them dispatched, the phone's ledger
    says what became of them and its events were acked by the store as it was."""
    delivered, failed, rejected, held = await claimed(store, n=4)
    ledger = [p.LedgerEntry(job_id=delivered.job_id, state="delivered"),
              p.LedgerEntry(job_id=failed.job_id, state="failed"),
              p.LedgerEntry(job_id=rejected.job_id, state="rejected"),
              p.LedgerEntry(job_id=held.job_id, state="accepted")]
    assert await store.reconcile("d1", "", ledger) == []
    assert await states(store, delivered.id) == [js.QUEUED, js.DISPATCHED, js.SENT, js.DELIVERED]
    assert await states(store, failed.id) == [js.QUEUED, js.DISPATCHED, js.FAILED]
    assert await states(store, rejected.id) == [js.QUEUED, js.DISPATCHED, js.QUEUED]  # for any device
    assert [j.id for j in await store.in_flight("d1")] == [held.id]
    # its rejection, sent again from its outbox, changes nothing more
    out = await store.apply_events("d1", "a", [Reports().job(rejected.job_id, "rejected")])
    assert out.requeued == 0 and await states(store, rejected.id) == [js.QUEUED, js.DISPATCHED, js.QUEUED]
    for job in (delivered, failed, rejected):
        await assert_history_follows_the_table(store, job.id)


async def test_jobs_pushed_to_an_earlier_journal_become_unconfirmed_never_pushed_again(store):
    """A reinstalled or replaced phone (same device id, new journal) cannot know them."""
    stranded, held = await claimed(store, n=2, journal="old")
    assert await store.strand_device("d1", time.time() + 60, reason="link down") == 2
    [held_again] = await store.reconcile("d1", "old", [p.LedgerEntry(job_id=stranded.job_id, state="accepted")])
    assert held_again.id == held.id
    assert await store.reconcile("d1", "new", []) == []
    for job in (stranded, held):
        got = await store.get_job("a", job.id_sms_api)
        assert got.state == js.UNCONFIRMED and "earlier journal" in got.reason
        await assert_history_follows_the_table(store, job.id)
    assert await store.in_flight("d1") == [] and await store.reconcile("d1", "new", []) == []
    # the old journal's late word still settles them
    await store.apply_events("d1", "a", [Reports().job(stranded.job_id, "sent")], journal="old")
    assert (await store.get_job("a", stranded.id_sms_api)).state == js.SENT


async def test_events_are_keyed_by_device_journal_and_event_id(store):
    """A new journal's event ids start again at 1: they are new events."""
    first = Reports()
    await store.apply_events("d1", "a", [first.sms("+33600000001", "from the first journal")], journal="j1")
    again = Reports()  # the same event ids, from another journal
    out = await store.apply_events("d1", "a", [again.sms("+33600000002", "from the second journal")], journal="j2")
    assert out.acked == ["e1"]
    out = await store.apply_events("d1", "a", [Reports().sms("+33600000002", "sent again")], journal="j2")
    assert out.acked == ["e1"]
    texts = sorted(m["text"] for m in await store.inbound("a", limit=10))
    assert texts == ["from the first journal", "from the second journal"]


async def test_a_job_id_of_another_incarnation_of_the_store_is_unknown(store):
    [job] = await claimed(store)
    number, _, uid = job.job_id.partition(".")
    assert number == str(job.id) and len(uid) == 12
    r = Reports()
    for other in (number, f"{number}.{'0' * 12}"):  # as a restored store's job of the same number would be
        await store.apply_events("d1", "a", [r.job(other, "delivered")])
    got = await store.get_job("a", job.id_sms_api)
    assert got.state == js.DISPATCHED
    await store.apply_events("d1", "a", [r.job(job.job_id, "sent")])
    assert (await store.get_job("a", job.id_sms_api)).state == js.SENT


async def test_expiry_takes_queued_jobs_past_their_ttl_only(store):
    now = time.time()
    [on_device] = await claimed(store, ttl_s=10)
    [old, fresh] = await store.enqueue("a", [sms(ttl_s=10), sms(ttl_s=1000)])
    assert await store.expire(now + 5) == 0
    assert await store.expire(now + 20) == 1
    job = await store.get_job("a", old.job.id_sms_api)
    assert job.state == js.EXPIRED and "ttl" in job.reason
    assert (await store.get_job("a", fresh.job.id_sms_api)).state == js.QUEUED
    assert (await store.get_job("a", on_device.id_sms_api)).state == js.DISPATCHED
    await assert_history_follows_the_table(store, old.job.id)


async def test_next_expiry_is_the_first_queued_jobs_and_none_without_one(store):
    assert await store.next_expiry() is None
    [on_device] = await claimed(store, ttl_s=5)  # dispatched: its ttl no longer counts
    assert await store.next_expiry() is None
    [soon, later] = await store.enqueue("b", [sms(ttl_s=10), sms(ttl_s=1000)])
    assert await store.next_expiry() == soon.job.expires
    assert await store.expire(soon.job.expires + 1) == 1
    assert await store.next_expiry() == later.job.expires
    assert (await store.get_job("a", on_device.id_sms_api)).state == js.DISPATCHED


async def test_counts_by_state_and_priority(store):
    await store.enqueue("a", [sms(priority=0), sms(priority=2), sms(priority=2)])
    await store.claim("a", "d1", 1)
    assert await store.counts() == {(js.QUEUED, 0): 1, (js.QUEUED, 2): 1, (js.DISPATCHED, 2): 1}


# -- the webhook events jobs raise --------------------------------------------------------


async def test_each_step_raises_its_event_in_order(store):
    [job] = await claimed(store, id_sms_api="m1")
    await store.apply_events("d1", "a", [Reports().job(job.job_id, "delivered")])
    got = await outbox_events(store, "a")
    assert [e["kind"] for e in got] == ["sms_queued", "sms_dispatched", "sms_sent", "sms_delivered"]
    assert {e["id_sms_api"] for e in got} == {"m1"}
    assert [r["order_key"] for r in await store.outbox("a")] == ["m1"] * 4


async def test_the_store_records_what_the_filter_lets_through(store, sends):
    sends.set({"a": {"sms_sent"}})
    [job] = await claimed(store)
    await store.apply_events("d1", "a", [Reports().job(job.job_id, "delivered")])
    assert [e["kind"] for e in await outbox_events(store)] == ["sms_sent"]
    assert ("a", "sms_delivered") in sends.asked  # it asked; it did not decide
