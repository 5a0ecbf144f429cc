"""Webhooks, piece by piece: backoff, the [webhooks] config section and the
webhook_url check. The store's outbox claims (order per key, leases, retries,
dead events) are tested with the store, in tests/store_contract/."""

from __future__ import annotations

import random
import re

import pytest

from bridge.config import ConfigError, parse
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
