"""Webhooks, piece by piece: backoff, the [webhooks] config section (and the
webhook_url check), and the store's outbox claims (order per key, leases,
retries, dead events)."""

from __future__ import annotations

import random
import re

import pytest

from bridge.config import ConfigError, parse
from bridge.store.sqlite import SqliteStore
from bridge.webhooks import deliverer as wh


def test_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(1)
    for attempts, full in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0), (1000, 60.0)):
        for _ in range(50):
            d = wh.backoff(attempts, initial=1.0, cap=60.0, rng=rng)
            assert full / 2 <= d <= full


# ----------------------------------------------------------------------------
# The [webhooks] config section


def test_webhooks_section_defaults_and_values():
    config = parse({})
    assert config.webhooks.timeout == 5.0 and config.webhooks.max_age == 86400.0
    config = parse({"webhooks": {"timeout": 2, "max_age": 3600, "concurrency": 8, "backoff_initial": 0.5,
                                 "backoff_max": 30, "poll_interval": 5, "lease": 20}})
    w = config.webhooks
    assert (w.timeout, w.max_age, w.concurrency, w.backoff_initial, w.backoff_max, w.poll_interval, w.lease) == \
        (2, 3600, 8, 0.5, 30, 5, 20)


@pytest.mark.parametrize("table,message", [
    ({"timeout": 0}, "webhooks.timeout: must be greater than 0"),
    ({"timeout": "5"}, "webhooks.timeout: must be"),
    ({"concurrency": 1.5}, "webhooks.concurrency: must be an integer"),
    ({"retries": 3}, "webhooks.retries: unknown key"),
    ({"backoff_initial": 10, "backoff_max": 5}, "webhooks.backoff_max: must not be shorter"),
    ({"timeout": 30, "lease": 30}, "webhooks.lease: must be longer than webhooks.timeout"),
])
def test_webhooks_section_errors_name_the_key(table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse({"webhooks": table})


# ----------------------------------------------------------------------------
# The store's outbox


@pytest.fixture
async def store(tmp_path):
    s = SqliteStore(tmp_path / "s.db", synchronous="normal")
    await s.open()
    s.set_webhooks({"a": "json", "b": "json"})
    yield s
    await s.close()


async def record(store: SqliteStore, *events: tuple[str, str, str], at: float = 1000.0) -> None:
    """(account, kind, order_key) events, recorded in one transaction at time ``at``."""
    def write(db):
        for account, kind, key in events:
            store._event(db, account, kind, key, {"n": key}, at)
    await store._run(store._tx(write))


async def raw(store: SqliteStore) -> dict[int, dict]:
    rows = await store._run(store._select_dicts, "SELECT * FROM outbox ORDER BY id", ())
    return {r["id"]: r for r in rows}


async def test_claims_hand_out_only_the_first_event_of_each_key(store):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"), ("a", "sms_sent", "m2"),
                 ("b", "sms_sent", "m1"), ("a", "sms_delivered", "m2"))
    got = await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1001)
    assert [r.id for r in got] == [1, 3, 4]  # account b's "m1" is another key
    assert await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1002) == []  # leased
    await store.settle_outbox(delivered=[(1, 1003)], now=1003)
    assert [r.id for r in await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1003)] == [2]
    # only accounts asked for; the limit holds
    await store.settle_outbox(release=[3, 4], now=1004)
    assert [r.id for r in await store.claim_outbox(["b"], 10, lease_s=30, now=1004)] == [4]
    assert [r.id for r in await store.claim_outbox(["a"], 1, lease_s=30, now=1004)] == [3]


async def test_a_retrying_event_holds_back_its_key_and_a_dead_one_lets_it_go(store):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"), ("a", "sms_sent", "m2"))
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1001)] == [1, 3]
    await store.settle_outbox(retry=[(1, 1100.0, "HTTP 503")], delivered=[(3, 1001)], now=1001)
    rows = await raw(store)
    assert rows[1]["attempts"] == 1 and rows[1]["last_error"] == "HTTP 503" and rows[1]["next_attempt"] == 1100
    assert rows[2]["next_attempt"] == 1100  # held back with it
    assert await store.claim_outbox(["a"], 10, lease_s=30, now=1050) == []
    assert await store.next_outbox_due(["a"], now=1050) == 1100
    [again] = await store.claim_outbox(["a"], 10, lease_s=30, now=1100)
    assert again.id == 1 and again.attempts == 1
    await store.settle_outbox(dead=[(1, "HTTP 404")], now=1101)
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1101)] == [2]
    assert await store.outbox_counts() == {"pending": 1, "delivered": 1, "dead": 1}
    rows = await raw(store)
    assert rows[1]["dead"] == 1 and rows[1]["last_error"] == "HTTP 404" and rows[1]["attempts"] == 2


async def test_an_unsettled_claim_comes_back_after_its_lease(store):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_delivered", "m1"))
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1001)] == [1]
    # the daemon died here
    assert await store.claim_outbox(["a"], 10, lease_s=30, now=1030) == []
    assert [r.id for r in await store.claim_outbox(["a"], 10, lease_s=30, now=1031)] == [1]


async def test_recovered_account_makes_its_retries_due(store):
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_sent", "m2"), ("b", "sms_sent", "m3"))
    await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1001)
    await store.settle_outbox(retry=[(1, 5000.0, "refused"), (2, 5000.0, "refused"), (3, 5000.0, "refused")],
                              now=1001)
    await store.settle_outbox(recovered=["a"], now=1200)
    assert [r.id for r in await store.claim_outbox(["a", "b"], 10, lease_s=30, now=1200)] == [1, 2]


async def test_listener_hears_each_recorded_event(store):
    heard = []
    store.set_outbox_listener(lambda: heard.append(1))
    await record(store, ("a", "sms_sent", "m1"), ("a", "sms_sent", "m2"), ("zzz", "sms_sent", "m3"))
    assert len(heard) == 2  # account zzz has no webhook: nothing recorded
    store.set_outbox_listener(None)
    await record(store, ("a", "sms_sent", "m4"))
    assert len(heard) == 2


@pytest.mark.parametrize("url,message", [
    ("ftp://crm.example/hook", "must be an http:// or https:// URL"),
    ("http:///hook", "must be an http:// or https:// URL"),
    ("http://crm.example/a hook", "must not contain spaces or control characters"),
    ("http://crm.example/hook\r\nX-Injected: 1", "must not contain spaces or control characters"),
    ("http://crm.example:99999/hook", "cannot be sent"),
    ("http://crm..example/hook", "cannot be sent: 'crm..example' is not a valid host name"),
    ("http://crm.example/hook#part", "must not have a #fragment"),
    ("http://crm.example/\udc80", "is not encodable text"),
])
def test_unsendable_webhook_url_is_refused_naming_the_key(url, message):
    accounts = [{"login": "a", "access_key": "k", "webhook_url": "http://ok.example/hook"},
                {"login": "b", "access_key": "k", "webhook_url": url}]
    with pytest.raises(ConfigError, match=re.escape(f"accounts[1].webhook_url: {message}")):
        parse({"accounts": accounts})


def test_sendable_webhook_urls_are_kept_as_written():
    for url in ("http://127.0.0.1:3000/hoök?x=é", "https://user:pw@crm.example/hook/", "http://[::1]:8080/h",
                "https://bücher.example/cb?token=a%26b"):
        [account] = parse({"accounts": [{"login": "a", "access_key": "k", "webhook_url": url}]}).accounts
        assert account.webhook_url == url
