"""Outbox: events recorded with what raised them, claimed in order per key,
leased, retried, dead, settled; the listener; only what the filter lets through."""

from __future__ import annotations

import json

import pytest

from bridge.store.model import OutboxEvent
from store_contract.contract_util import outbox_events


async def record(store, *events: tuple[str, str, str], at: float = 1000.0) -> None:
    """(account, kind, order_key) events, recorded in one transaction at time ``at``."""
    await store.record_events([OutboxEvent(account, kind, key, {"n": key}) for account, kind, key in events], at=at)


@pytest.fixture
def ids():
    """Outbox ids are the backend's: name them by the order they were recorded in."""
    async def of(store) -> list[int]:
        return [r["id"] for r in await store.outbox()]
    return of


async def test_a_recorded_event_carries_its_id_kind_account_and_time(store):
    assert await store.record_events([OutboxEvent("a", "sms_sent", "m1", {"id_sms_api": "m1"})], at=1234.5) == 1
    [row] = await store.outbox()
    body = json.loads(row["payload"])
    assert body == {"id_sms_api": "m1", "event_id": f"evt_{row['id']}", "kind": "sms_sent", "account": "a",
                    "at": 1234.5}
    assert (row["account"], row["kind"], row["order_key"], row["delivered_at"]) == ("a", "sms_sent", "m1", None)


async def test_claims_hand_out_only_the_first_event_of_each_key(store, ids):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"), ("a", "sms_sent", "m2"),
                 ("b", "sms_sent", "m1"), ("a", "sms_delivered", "m2"))
    e = await ids(store)
    got = await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1001)
    assert [r.id for r in got] == [e[0], e[2], e[3]]  # account b's "m1" is another key
    assert await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1002) == []  # leased
    await store.settle_outbox(delivered=[(e[0], 1003)], now=1003)
    assert [r.id for r in await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1003)] == [e[1]]
    # only accounts asked for; the limit holds
    await store.settle_outbox(release=[e[2], e[3]], now=1004)
    assert [r.id for r in await store.claim_outbox(["b"], 10, lease_s=30, now=1004)] == [e[3]]
    assert [r.id for r in await store.claim_outbox(["a"], 1, lease_s=30, now=1004)] == [e[2]]
    assert await store.claim_outbox([], 10, lease_s=30, now=1004) == []
    assert await store.claim_outbox(["a"], 0, lease_s=30, now=1004) == []


async def test_a_retrying_event_holds_back_its_key_and_a_dead_one_lets_it_go(store, ids):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"), ("a", "sms_sent", "m2"))
    e = await ids(store)
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1001)] == [e[0], e[2]]
    await store.settle_outbox(retry=[(e[0], 1100.0, "HTTP 503")], delivered=[(e[2], 1001)], now=1001)
    assert await store.claim_outbox(["a"], 10, lease_s=30, now=1050) == []
    assert await store.next_outbox_due(["a"], now=1050) == 1100
    [again] = await store.claim_outbox(["a"], 10, lease_s=30, now=1100)
    assert again.id == e[0] and again.attempts == 1
    await store.settle_outbox(dead=[(e[0], "HTTP 404")], now=1101)
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1101)] == [e[1]]
    assert await store.outbox_counts() == {"pending": 1, "delivered": 1, "dead": 1}
    delivered = {r["id"]: r["delivered_at"] for r in await store.outbox("a")}
    assert delivered[e[2]] == 1001 and delivered[e[0]] is None


async def test_settle_and_claim_hands_out_the_next_event_of_a_key_just_delivered(store, ids):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"), ("a", "sms_sent", "m2"),
                 ("a", "sms_delivered", "m2"), ("a", "sms_sent", "m3"), ("a", "sms_delivered", "m3"))
    e = await ids(store)
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1001)] == [e[0], e[2], e[4]]
    # m1 delivered, m2 retried later, m3 released: one transaction, and the claim sees all three
    got = await store.settle_and_claim(["a"], 10, lease_s=30, delivered=[(e[0], 1002)],
                                       retry=[(e[2], 1500.0, "HTTP 503")], release=[e[4]], now=1002)
    assert [(r.id, r.attempts) for r in got] == [(e[1], 0), (e[4], 0)]  # oldest due first; m2 waits
    assert await store.claim_outbox(["a"], 10, lease_s=30, now=1003) == []  # all leased (or waiting)
    # nothing to claim (no accounts, no room): it still settles
    assert await store.settle_and_claim([], 10, lease_s=30, delivered=[(e[1], 1004)], dead=[(e[4], "gone")],
                                        now=1004) == []
    assert await store.settle_and_claim(["a"], 0, lease_s=30, delivered=[(e[5], 1004)], now=1004) == []
    assert await store.outbox_counts() == {"pending": 2, "delivered": 3, "dead": 1}
    assert await store.next_outbox_due(["a"], now=1004) == 1500
    delivered = {r["id"]: r["delivered_at"] for r in await store.outbox("a")}
    assert delivered[e[0]] == 1002 and delivered[e[1]] == 1004 and delivered[e[5]] == 1004


async def test_an_unsettled_claim_comes_back_after_its_lease(store, ids):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"))
    e = await ids(store)
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1001)] == [e[0]]
    # the daemon died here
    assert await store.claim_outbox(["a"], 10, lease_s=30, now=1030) == []
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1031)] == [e[0]]


async def test_recovered_account_makes_its_retries_due(store, ids):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_sent", "m2"), ("b", "sms_sent", "m3"))
    e = await ids(store)
    await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1001)
    await store.settle_outbox(retry=[(e[0], 5000.0, "refused"), (e[1], 5000.0, "refused"),
                                     (e[2], 5000.0, "refused")], now=1001)
    await store.settle_outbox(recovered=["a"], now=1200)
    assert [r.id for r in await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1200)] == [e[0], e[1]]
    assert await store.next_outbox_due(["b"], now=1200) == 5000
    assert await store.next_outbox_due([], now=1200) is None


async def test_claims_go_oldest_due_first(store, ids):
    await record(store, ("a", "sms_sent", "late"), at=1010)
    await record(store, ("a", "sms_sent", "early"), at=1000)
    e = await ids(store)
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1020)] == [e[1], e[0]]


async def test_listener_hears_each_recorded_event(store):
    heard = []
    store.set_outbox_listener(lambda: heard.append(1))
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_sent", "m2"), ("zzz", "sms_sent", "m3"))
    assert len(heard) == 2  # account zzz is sent nothing: nothing recorded
    store.set_outbox_listener(None)
    await record(store, ("a", "sms_sent", "m4"))
    assert len(heard) == 2


async def test_only_what_the_filter_lets_through_is_recorded(store, sends):
    sends.set({"a": {"sms_sent"}})
    n = await store.record_events([OutboxEvent("a", "sms_sent", "k", {}), OutboxEvent("a", "sms_queued", "k", {}),
                                   OutboxEvent("b", "sms_sent", "k", {})])
    assert n == 1 and [e["kind"] for e in await outbox_events(store)] == ["sms_sent"]
    assert {("a", "sms_queued"), ("b", "sms_sent")} <= set(sends.asked)
    # the filter is asked at every event: a change applies to the next one
    sends.set({"b": {"sms_sent"}})
    assert await store.record_events([OutboxEvent("b", "sms_sent", "k", {})]) == 1
