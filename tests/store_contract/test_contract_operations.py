"""What the operators' routes and the console read and do, on every backend:
cancelling a queued job, finding jobs, counts per account and sends per
device, the outbox as an operator reads it, dead letters and their replay,
an account's last activity, tracked links by code, API tokens; and what the
events and message rows carry (job and inbound ids, order keys)."""

from __future__ import annotations

import json

from bridge.core import jobstates as js
from bridge.store.model import OUTBOX_DEAD, OUTBOX_DELIVERED, OUTBOX_PENDING, OUTBOX_RETRYING, OutboxEvent
from store_contract.contract_util import Reports, outbox_events, sms, states


async def test_a_queued_job_is_cancelled_and_one_on_a_device_is_not(store):
    await store.enqueue("a", [sms(id_sms_api="early", text="one"), sms(id_sms_api="late", text="two")])
    [taken] = await store.claim("a", "d1", 1)
    assert taken.id_sms_api == "early"
    stays = await store.cancel("a", "early", reason="asked")
    assert stays is not None and stays.state == js.DISPATCHED  # the caller says why it stays
    cancelled = await store.cancel("a", "late", reason="asked by the operator")
    assert cancelled is not None and cancelled.state == js.next_state(js.QUEUED, "cancel")
    assert cancelled.reason == "asked by the operator"
    assert (await store.get_job("a", "late")).state == cancelled.state
    assert await states(store, cancelled.id) == [js.QUEUED, cancelled.state]
    assert await store.cancel("a", "unknown", reason="x") is None
    assert await store.cancel("b", "late", reason="x") is None  # another account's key
    assert (await store.counts("a")).get((js.QUEUED, 1), 0) == 0
    assert (await store.counts())[(cancelled.state, 1)] == 1


async def test_jobs_are_found_by_account_state_key_or_part_of_the_number(store):
    await store.enqueue("a", [sms(id_sms_api="k1", to="+33611111111"), sms(id_sms_api="k2", to="+33622222222")])
    await store.enqueue("b", [sms(id_sms_api="k3", to="+33611111111")])
    [taken] = await store.claim("a", "d1", 1)
    assert [j.id_sms_api for j in await store.find_jobs("a")] == ["k2", "k1"]  # newest first
    assert [j.id_sms_api for j in await store.find_jobs(None)] == ["k3", "k2", "k1"]
    assert [j.id_sms_api for j in await store.find_jobs("a", states=[js.DISPATCHED])] == [taken.id_sms_api]
    assert [j.id_sms_api for j in await store.find_jobs(None, search="0611")] == []
    assert [j.id_sms_api for j in await store.find_jobs(None, search=" 611111 ")] == ["k3", "k1"]
    assert [j.id_sms_api for j in await store.find_jobs("a", search="k2")] == ["k2"]
    assert len(await store.find_jobs(None, limit=1)) == 1
    job = await store.get_job_by_id("a", taken.id)
    assert job is not None and job.id_sms_api == taken.id_sms_api
    assert await store.get_job_by_id("b", taken.id) is None


async def test_counts_per_account_and_sends_per_device(store):
    await store.enqueue("a", [sms(), sms(priority=2)])
    await store.enqueue("b", [sms()])
    r = Reports()
    jobs = await store.claim("a", "d1", 2)
    [other] = await store.claim("b", "d2", 1)
    await store.apply_events("d1", "a", [r.job(j.job_id, "sent") for j in jobs])
    await store.apply_events("d2", "b", [r.job(other.job_id, "sent")])
    assert await store.counts("a") == {(js.SENT, 1): 1, (js.SENT, 2): 1}
    assert await store.counts("b") == {(js.SENT, 1): 1}
    assert await store.counts("c") == {}
    assert await store.counts() == {(js.SENT, 1): 2, (js.SENT, 2): 1}
    assert await store.sent_counts(0) == {"d1": 2, "d2": 1}
    assert await store.sent_counts(2e10) == {}


async def test_the_outbox_as_an_operator_reads_it_and_dead_letters_replayed(store):
    await store.record_events([OutboxEvent("a", "sms_sent", f"m{i}", {"n": i}) for i in range(4)]
                              + [OutboxEvent("b", "sms_sent", "m9", {"n": 9})], at=1000.0)
    ids = [r["id"] for r in await store.outbox()]
    await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1001)
    await store.settle_outbox(delivered=[(ids[0], 1002)], retry=[(ids[1], 1100.0, "HTTP 503")],
                              dead=[(ids[2], "HTTP 404"), (ids[4], "HTTP 410")], release=[ids[3]], now=1002)
    entries = await store.outbox_entries("a", undelivered=False)
    assert [e.id for e in entries] == list(reversed(ids[:4]))  # newest first
    assert [e.status for e in entries] == [OUTBOX_PENDING, OUTBOX_DEAD, OUTBOX_RETRYING, OUTBOX_DELIVERED]
    assert entries[1].last_error == "HTTP 404" and entries[2].next_attempt == 1100.0
    assert json.loads(entries[3].payload)["n"] == 0
    assert [e.id for e in await store.outbox_entries("a")] == [ids[3], ids[2], ids[1]]
    assert [d["id"] for d in await store.dead_letters()] == [ids[2], ids[4]]
    [dead] = await store.dead_letters("a")
    assert (dead["kind"], dead["order_key"], dead["last_error"], dead["attempts"]) == ("sms_sent", "m2",
                                                                                      "HTTP 404", 1)
    assert (await store.outbox_counts())["dead"] == 2
    heard: list[None] = []
    store.set_outbox_listener(lambda: heard.append(None))
    assert await store.replay_dead("a", ids=[], now=2000) == 0
    assert await store.replay_dead("a", now=2000) == 1
    assert heard
    assert await store.dead_letters("a") == []
    assert (await store.outbox_counts())["dead"] == 1
    again = [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=2000)]
    assert ids[2] in again
    assert await store.replay_dead(ids=[ids[4]], now=2000) == 1
    assert await store.dead_letters() == [] and (await store.outbox_counts())["dead"] == 0


async def test_last_activity_is_the_newest_job_change_or_inbound_sms(store):
    assert await store.last_activity("a") == 0
    [e] = await store.enqueue("a", [sms()])
    assert await store.last_activity("a") == e.job.updated
    await store.apply_events("d1", "a", [Reports().sms("+33611111111", "hi")])
    [inbound] = await store.inbound("a")
    row = await store.get_inbound("a", inbound["id"])
    assert await store.last_activity("a") == max(e.job.updated, row["created"])
    assert await store.last_activity("b") == 0


async def test_a_tracked_link_is_read_by_its_code(store):
    await store.enqueue("a", [sms(id_sms_api="m1", url="https://example.org/offer", link_code="Ab12")])
    link = await store.link("Ab12")
    assert link is not None and (link.account, link.id_sms_api, link.url, link.clicks) == (
        "a", "m1", "https://example.org/offer", 0)
    await store.click("Ab12")
    assert (await store.link("Ab12")).clicks == 1
    assert await store.link("nope") is None


async def test_api_tokens_live_until_they_expire_or_are_revoked(store):
    await store.add_api_token("d1", "a", "alice", expires=2e10)
    await store.add_api_token("d2", "a", "alice", expires=2e10)
    await store.add_api_token("d3", "b", "bob", expires=2e10)
    assert await store.api_token("d1") == ("a", "alice")
    assert await store.api_token("d1", now=2e10 + 1) is None  # expired
    assert await store.api_token("unknown") is None
    assert await store.revoke_api_tokens() == 0
    assert await store.revoke_api_tokens(digest="d1") == 1
    assert await store.api_token("d1") is None and await store.api_token("d2") == ("a", "alice")
    assert await store.revoke_api_tokens(username="alice") == 1
    assert await store.api_token("d2") is None and await store.api_token("d3") == ("b", "bob")


async def test_events_and_rows_carry_their_record_ids_and_each_message_its_own_key(store):
    r = Reports()
    [e] = await store.enqueue("a", [sms(id_sms_api="m1", text="the text")])
    await store.apply_events("d1", "a", [r.sms("+33611111111", "one"), r.sms("+33611111111", "two"),
                                         r.call("+33622222222", "incoming", 3.0), r.call("+33622222222", "missed")])
    [queued, *received] = await outbox_events(store, "a")
    assert (queued["job_id"], queued["message"], queued["created"], queued["due"]) == (
        e.job.id, "the text", e.job.created, e.job.due)
    rows = {r["id"]: r for r in await store.outbox("a")}
    inbound = sorted(m["id"] for m in await store.inbound("a"))
    sms_rows = [row for row in rows.values() if row["kind"] == "sms_received"]
    assert [row["order_key"] for row in sms_rows] == [f"in:{i}" for i in inbound]
    assert [json.loads(row["payload"])["inbound_id"] for row in sms_rows] == inbound
    calls = sorted(c["id"] for c in await store.calls("a"))
    assert [row["order_key"] for row in rows.values() if row["kind"].startswith("call_")] == [
        f"call:{i}" for i in calls]
    listed = await store.messages("a", status=["received", js.QUEUED])
    assert {m["direction"] for m in listed} == {"in", "out"} and len(listed) == 3
    assert [m["job_id"] for m in listed if m["direction"] == "out"] == [e.job.id]
    assert sorted(m["inbound_id"] for m in listed if m["direction"] == "in") == inbound
    assert [m["text"] for m in await store.messages("a", status=[js.QUEUED, js.SENT])] == ["the text"]
    assert await store.messages("a", status=[js.SENT]) == []
