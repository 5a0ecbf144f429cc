"""Faults a gateway meets over a year, each reproduced: no single message,
event or frame may stop a device, and nothing accepted may turn into a 5xx."""

from __future__ import annotations

import json
import time

import aiohttp
from api_util import serving
from conftest import api_url, make_config, wait_until

from device_agents import protocol

HEADER = {"login": "user@email.com", "accessKey": "your-access-key"}
BEARER = {"Authorization": "Bearer your-access-key"}


async def sendsms(http, daemon, messages):
    async with http.post(api_url(daemon, "/api/v1/sendsms"), json={"header": HEADER, "messages": messages}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_forty_long_incoming_sms_in_one_batch_all_arrive(tmp_path):
    """40 × 9,000-character SMS would make one events frame of ~720 kB, over
    the protocol's 256 KiB: the agent's sender must split it, not die."""
    async with serving(make_config(tmp_path)) as daemon:
        runtime = daemon.kinds.get("virtual").runtimes["sim-1"]
        events = [protocol.SmsReceived(event_id=runtime.new_event_id(), sender="+33612345678",
                                       text=f"{i:02d}" + "é" * 8998, at=time.time()) for i in range(40)]
        runtime.emit(events)
        rows = await wait_until(lambda: _inbound(daemon, 40), within=30, what="40 inbound SMS stored")
        assert sorted(r["text"][:2] for r in rows) == [f"{i:02d}" for i in range(40)]
        # and the device still works
        async with aiohttp.ClientSession() as http:
            [answer] = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "after"}])
        await wait_until(lambda: _state(daemon, answer["id_sms_api"], "delivered"), what="later SMS delivered")


async def _inbound(daemon, n):
    rows = await daemon.store.inbound("user@email.com", limit=1000)
    return rows if len(rows) == n else None


async def _state(daemon, id_sms_api, state):
    job = await daemon.store.get_job("user@email.com", id_sms_api)
    return job if job and job.state == state else None


async def test_a_window_of_long_texts_is_pushed_in_frames_that_fit(tmp_path):
    """64 jobs of 5,000 two-byte characters (640 kB) go to one device with a window of 64."""
    config = make_config(tmp_path, agents={"window": 64})
    async with serving(config) as daemon, aiohttp.ClientSession() as http:
        answers = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": f"{i:02d}" + "ü" * 4998}
                                               for i in range(64)])
        assert all(a["sent"] == 1 for a in answers)
        for a in answers:
            await wait_until(lambda a=a: _state(daemon, a["id_sms_api"], "delivered"), within=30,
                             what=f"{a['id_sms_api']} delivered")


async def test_links_that_expand_past_the_limit_are_refused_at_the_api(tmp_path):
    text = "[Lien] " * 700  # 4,900 characters as written, ~25,000 once each link is written out
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        [answer] = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": text,
                                                 "url": "https://example.com/offer"}])
        assert answer["sent"] == 0 and "once its links are written out" in answer["error_message"]
        async with http.get(api_url(daemon, "/api/v1/sms"), headers=BEARER) as resp:
            assert resp.status == 200
            assert (await resp.json())["data"] == []  # nothing was stored


async def test_dates_no_clock_can_write_back_and_crlf_urls_are_refused_per_message(tmp_path):
    async with serving(make_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        answers = await sendsms(http, daemon, [
            {"phone_number": "+33612345678", "message": "ancient", "date_to_send": "0001-01-01 00:00:00"},
            {"phone_number": "+33612345678", "message": "far", "date_to_send": "9999-12-31 23:59:59"},
            {"phone_number": "+33612345678", "message": "Go [Lien]", "url": "https://example.com/a\r\nSet-Cookie: x"},
            {"phone_number": "+33612345678", "message": "good"},
        ])
        assert [a["sent"] for a in answers] == [0, 0, 0, 1]
        assert "out of range" in answers[0]["error_message"] and "out of range" in answers[1]["error_message"]
        assert "control characters" in answers[2]["error_message"]
        # The read side never 500s on what was stored.
        async with http.get(api_url(daemon, "/api/v1/sms"), headers=BEARER) as resp:
            assert resp.status == 200
            listed = json.dumps(await resp.json())
        assert "good" in listed and "ancient" not in listed
