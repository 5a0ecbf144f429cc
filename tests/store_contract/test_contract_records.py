"""Records: inbound SMS, calls, call notes, contacts, opt-outs, tracked links
and clicks, the message list."""

from __future__ import annotations

import pytest

from bridge.core import jobstates as js
from bridge.core.optout import Keywords
from bridge.store.model import Contact
from store_contract.contract_util import Reports, outbox_events, sms


async def test_an_inbound_sms_is_stored_listed_and_raised(store):
    r = Reports()
    hello = r.sms("+33611111111", "Hello")
    out = await store.apply_events("d1", "a", [hello, r.sms("+33622222222", "Again")])
    assert out.acked == ["e1", "e2"] and out.finished == 0
    inbound = await store.inbound("a")
    assert [(m["sender"], m["text"], m["device_id"]) for m in inbound] == [
        ("+33622222222", "Again", "d1"), ("+33611111111", "Hello", "d1")]  # newest first
    assert await store.inbound("b") == []
    one = await store.get_inbound("a", inbound[1]["id"])
    assert one["text"] == "Hello" and one["direction"] == "in" and one["status"] == "received"
    assert await store.get_inbound("b", inbound[1]["id"]) is None
    events = await outbox_events(store, "a")
    assert [(e["kind"], e["from"], e["message"]) for e in events] == [
        ("sms_received", "+33611111111", "Hello"), ("sms_received", "+33622222222", "Again")]
    # the same event again (its ack was lost) is acked and changes nothing
    again = await store.apply_events("d1", "a", [hello])
    assert again.acked == [hello.event_id]
    assert len(await store.inbound("a")) == 2 and len(await store.outbox("a")) == 2


async def test_calls_and_notes_are_stored_and_raised(store):
    r = Reports()
    await store.apply_events("d1", "a", [r.call("+33611111111", "incoming", 12.5), r.call("+33622222222", "missed"),
                                         r.note("+33611111111", "wants a quote")])
    calls = await store.calls("a")
    assert [(c["direction"], c["number"], c["duration_s"]) for c in calls] == [
        ("missed", "+33622222222", 0.0), ("incoming", "+33611111111", 12.5)]
    note_id = await store.add_call_note("a", "+33611111111", "called back", source="interface")
    assert isinstance(note_id, int)
    kinds = [(e["kind"], e.get("qualification")) for e in await outbox_events(store, "a")]
    assert kinds == [("call_incoming", None), ("call_missed", None), ("call_qualification", "wants a quote"),
                     ("call_qualification", "called back")]


async def test_contacts_are_upserted_by_number_keeping_what_an_update_leaves_out(store):
    created = await store.upsert_contacts("a", [Contact(phone_number="+33611111111", firstname="Ann", email="a@x"),
                                                Contact(phone_number="+33622222222", lastname="Bo")])
    assert created == [True, True]
    assert await store.upsert_contacts("a", [Contact(phone_number="+33611111111", lastname="Lee")]) == [False]
    got = {c.phone_number: c for c in await store.contacts("a")}
    assert got["+33611111111"] == Contact(phone_number="+33611111111", firstname="Ann", lastname="Lee", email="a@x")
    assert await store.contacts("b") == []
    assert len(await store.contacts("a", limit=1)) == 1


async def test_stop_and_start_words_opt_a_sender_out_and_in(store):
    store.set_opt_out(Keywords(["STOP"], ["START"]), default_region="FR")
    r = Reports()
    await store.apply_events("d1", "a", [r.sms("0611111111", " Stop! "), r.sms("+33622222222", "stop the music")])
    assert await store.opted_out("a", ["+33611111111", "+33622222222"]) == {"+33611111111"}
    assert await store.opted_out("b", ["+33611111111"]) == set()
    assert await store.opted_out("a", []) == set()
    await store.apply_events("d1", "a", [r.sms("+33611111111", "start")])
    assert await store.opted_out("a", ["+33611111111"]) == set()


async def test_a_tracked_link_counts_its_clicks_and_raises_an_event(store):
    [e] = await store.enqueue("a", [sms(id_sms_api="m1", url="https://example.org/offer", link_code="Ab12")])
    [link] = await store.links("a", "m1")
    assert (link.code, link.url, link.clicks, link.phone_number) == ("Ab12", "https://example.org/offer", 0,
                                                                     e.job.phone_number)
    clicked = await store.click("Ab12", user_agent="curl/8", ip="192.0.2.1")
    assert clicked.clicks == 1 and clicked.account == "a" and clicked.id_sms_api == "m1"
    assert (await store.click("Ab12")).clicks == 2
    assert await store.click("nope") is None
    looked_up = await store.link("Ab12")  # reading records nothing
    assert looked_up is not None and (looked_up.url, looked_up.clicks) == ("https://example.org/offer", 2)
    assert await store.link("nope") is None
    assert [x.clicks for x in await store.links("a", "m1")] == [2]
    assert await store.links("b", "m1") == []
    clicks = [ev for ev in await outbox_events(store, "a") if ev["kind"] == "link_clicked"]
    assert [(ev["code"], ev["clicks"], ev["link"]) for ev in clicks] == [
        ("Ab12", 1, "https://example.org/offer"), ("Ab12", 2, "https://example.org/offer")]


async def test_messages_list_outgoing_and_inbound_newest_first(store):
    r = Reports()
    await store.enqueue("a", [sms(id_sms_api="m1", text="first")])
    await store.apply_events("d1", "a", [r.sms("+33611111111", "reply")])
    await store.enqueue("a", [sms(id_sms_api="m2", text="second")])
    [job] = await store.claim("a", "d1", 1)
    await store.apply_events("d1", "a", [r.job(job.job_id, "sent")])
    both = await store.messages("a")
    assert [(m["direction"], m["text"]) for m in both] == [("out", "second"), ("in", "reply"), ("out", "first")]
    assert [m["text"] for m in await store.messages("a", direction="out")] == ["second", "first"]
    assert [m["text"] for m in await store.messages("a", direction="in")] == ["reply"]
    assert [m["text"] for m in await store.messages("a", status="received")] == ["reply"]
    sent = await store.messages("a", status=js.SENT)
    assert [m["id"] for m in sent] == [job.id_sms_api] and sent[0]["sent_at"] is not None
    assert [m["text"] for m in await store.messages("a", take=1, skip=1)] == ["reply"]
    assert await store.messages("b") == []


async def test_messages_page_by_cursor_as_by_skip(store):
    await store.enqueue("a", [sms(text=f"out{i}") for i in range(7)])
    reports = Reports()
    await store.apply_events("d1", "a", [reports.sms("+33600000000", f"in{i}") for i in range(5)])
    everything = [m["text"] for m in await store.messages("a", take=100)]
    assert len(everything) == 12
    pages, cursor = [], None
    while True:
        rows = await store.messages("a", take=5, cursor=cursor)
        pages += [m["text"] for m in rows]
        if len(rows) < 5:
            break
        cursor = rows[-1]["cursor"]
    assert pages == everything  # the same list, page by page, without OFFSET
    assert [m["text"] for m in await store.messages("a", take=3, skip=4)] == everything[4:7]
    one_side = [m["text"] for m in await store.messages("a", direction="in", take=2)]
    rest = await store.messages("a", direction="in", take=10,
                                cursor=(await store.messages("a", direction="in", take=2))[-1]["cursor"])
    assert one_side + [m["text"] for m in rest] == [t for t in everything if t.startswith("in")]
    with pytest.raises(ValueError, match="cursor"):
        await store.messages("a", cursor="page-2")
