"""Clicks on tracked links are recorded within limits; a loop on a link still
redirects but writes no row and raises no webhook past the limit."""

from __future__ import annotations

import aiohttp
from api_util import serving
from conftest import api_url, make_config
from test_api_send import post, record_events

from bridge.api.links import Buckets, ClickLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_refills_at_its_rate():
    clock = Clock()
    bucket = Buckets(burst=3, per_s=0.5, clock=clock)
    assert [bucket.take("k") for _ in range(4)] == [True, True, True, False]
    assert bucket.take("other")  # each key has its own bucket
    clock.now += 1.0
    assert not bucket.take("k")  # half a token
    clock.now += 1.0
    assert bucket.take("k") and not bucket.take("k")


def test_a_bucket_remembers_a_bounded_number_of_keys():
    bucket = Buckets(burst=1, per_s=0.0, keys=100, clock=Clock())
    for i in range(1000):
        bucket.take(f"client-{i}")
    assert len(bucket._state) == 100


def test_the_limiter_charges_per_link_and_per_client():
    clock = Clock()
    limiter = ClickLimiter(clock=clock)
    one_client = [limiter.allow("Ab12", "192.0.2.1") for _ in range(15)]
    assert one_client.count(True) == 10  # the client's burst
    many_clients = [limiter.allow("Ab12", f"192.0.2.{i}") for i in range(2, 40)]
    assert many_clients.count(True) == 10  # the link's burst of 20, 10 of it used above
    assert limiter.dropped == 5 + 28
    clock.now += 6.0
    assert limiter.allow("Zz99", "192.0.2.1")  # the client earned one token back


async def test_a_click_loop_is_redirected_but_recorded_only_within_the_limit(tmp_path):
    send = {"header": {"login": "user@email.com", "accessKey": "your-access-key"},
            "messages": [{"phone_number": "+33612345678", "message": "Offer: [Lien]",
                          "url": "https://example.com/offer"}]}
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        record_events(daemon)
        status, body = await post(http, daemon, "/api/v1/sendsms", send)
        assert status == 200, body
        code = body[0]["message"].rsplit("/", 1)[1]
        for _ in range(40):
            async with http.get(api_url(daemon, f"/l/{code}"), allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "https://example.com/offer"
        [link] = await daemon.store.links("user@email.com", body[0]["id_sms_api"])
        assert link.clicks == 10
        events = [e for e in await daemon.store.outbox("user@email.com") if e["kind"] == "link_clicked"]
        assert len(events) == 10
