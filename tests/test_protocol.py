"""The device protocol: frames both ways, and what a bad frame does to a session."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import websockets
from conftest import api_url, make_config, running, timeout, wait_until

from device_agents import protocol as p

MESSAGES = [
    p.Hello(device_id="sim-1", token="t", agent="test/1",
            capabilities=p.Capabilities(sms=True, calls=True, delivery_reports=True),
            sims=(p.Sim(slot=0, number="+33612345678", operator="Orange"),), window=4,
            ledger=(p.LedgerEntry(job_id="7", state="sent"),), timezone="Europe/Paris"),
    p.Welcome(device_id="sim-1", window=4, lease_s=30.0, server_time=1.5),
    p.Jobs(jobs=(p.SendSms(job_id="1", to="+33612345678", text="héllo €", report=True, reference="abc"),
                 p.Dial(job_id="2", to="+33612345678", hangup_after_s=20.0))),
    p.Events(events=(
        p.JobState(event_id="e1", job_id="1", state="sent", at=1.0, parts=2),
        p.SmsReceived(event_id="e2", sender="+33612345678", text="salut", at=2.0, sim=1),
        p.CallEvent(event_id="e3", direction="missed", number="+33612345678", at=3.0),
        p.CallNote(event_id="e4", number="+33612345678", text="call back", at=4.0))),
    p.Ack(event_ids=("e1", "e2")),
    p.Status(at=5.0, battery=80, charging=False, signal=60, network="registered", operator="Orange"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_every_message_survives_encode_and_decode(message):
    assert p.decode(p.encode(message)) == message


@pytest.mark.parametrize("frame, complaint", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "bogus"}', "unknown frame type"),
    ('{"no": "type"}', "unknown frame type"),
    ('{"type": "hello", "token": "t", "version": 1}', "device_id"),
    ('{"type": "hello", "device_id": 5, "token": "t", "version": 1}', "must be a string"),
    ('{"type": "hello", "device_id": "d", "token": "t", "version": true}', "boolean"),
    ('{"type": "events", "events": [{"kind": "job_state", "event_id": "1", "job_id": "1", '
     '"state": "teleported", "at": 1}]}', "unknown job state"),
    ('{"type": "events", "events": [{"kind": "bogus"}]}', "unknown event kind"),
    ('{"type": "events", "events": [{"kind": "call_event", "event_id": "1", "direction": "sideways", '
     '"number": "1", "at": 1}]}', "unknown call direction"),
    ('{"type": "status", "at": 1, "battery": 140}', "out of range"),
    ('{"type": "status", "at": NaN}', "finite"),
])
def test_bad_frames_say_what_is_wrong(frame, complaint):
    with pytest.raises(p.RemoteProtocolError, match=complaint):
        p.decode(frame)


def test_direction_of_frames_is_enforced():
    with pytest.raises(p.RemoteProtocolError):
        p.decode(p.encode(MESSAGES[2]), allowed=p.AGENT_TO_BRIDGE)  # jobs come from the bridge only
    with pytest.raises(p.RemoteProtocolError):
        p.decode(b'{"type": "status", "at": 1}')  # binary frames are not the protocol


def test_building_an_oversized_frame_is_a_local_error():
    huge = p.Events(events=tuple(p.SmsReceived(event_id=str(i), sender="+1", text="x" * 9000, at=1.0)
                                 for i in range(40)))
    with pytest.raises(p.LocalProtocolError):
        p.encode(huge)


# -- sessions on a real listener ---------------------------------------------------------------

RAW = {"id": "raw", "kind": "modem", "account": "user@email.com", "port": "/dev/null",
       "standalone": True, "token": "raw-token"}


def raw_config(tmp_path, **kw):
    devices = [{"id": "sim-1", "kind": "virtual", "account": "user@email.com", "latency": 0,
                "jitter": 0, "delivery_delay": 0, "max_per_minute": 0}, RAW]
    return make_config(tmp_path, devices=devices, **kw)


def hello(**over):
    body = {"type": "hello", "version": 1, "device_id": "raw", "token": "raw-token", "window": 4,
            "capabilities": {"sms": True}}
    body.update(over)
    return json.dumps(body)


async def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout(5))
    return ws.close_code, ws.close_reason


BAD_SESSIONS = [
    ("garbage hello", ["{{{"], p.CLOSE_POLICY, "bad hello"),
    ("bad token", [hello(token="nope")], p.CLOSE_POLICY, "bad token"),
    ("unknown device", [hello(device_id="ghost")], p.CLOSE_POLICY, "unknown device"),
    ("old version", [hello(version=99)], p.CLOSE_POLICY, "version"),
    ("status before hello", ['{"type": "status", "at": 1}'], p.CLOSE_POLICY, "expected hello"),
    ("unknown frame", [hello(), '{"type": "launch_missiles"}'], p.CLOSE_POLICY, "unknown frame type"),
    ("malformed event", [hello(), '{"type": "events", "events": [{"kind": "sms_received"}]}'],
     p.CLOSE_POLICY, "event_id"),
    ("jobs from an agent", [hello(), '{"type": "jobs", "jobs": []}'], p.CLOSE_POLICY, "unknown frame type"),
    ("second hello", [hello(), hello()], p.CLOSE_POLICY, "hello sent twice"),
    ("binary frame", [hello(), b"\x00\x01"], p.CLOSE_POLICY, "binary"),
    ("oversized frame", [hello(), "x" * (p.MAX_FRAME_BYTES + 1)], p.CLOSE_TOO_BIG, ""),
]


async def test_a_bad_session_is_closed_and_nothing_else_notices(tmp_path):
    async with running(raw_config(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{daemon.listener.port}"
        await wait_until(lambda: "sim-1" in daemon.dispatcher.sessions, what="virtual phone online")
        for name, frames, code, reason in BAD_SESSIONS:
            async with websockets.connect(url, max_size=None) as ws:
                for frame in frames:
                    await ws.send(frame)
                got_code, got_reason = await closed_with(ws)
            assert got_code == code, name
            assert reason in got_reason, (name, got_reason)
        # The other device and the API never noticed.
        assert "sim-1" in daemon.dispatcher.sessions
        async with http.post(api_url(daemon, "/api/v1/sendsms"), json={
                "header": {"login": "user@email.com", "accessKey": "your-access-key"},
                "messages": [{"phone_number": "+33612345678", "message": "still here"}]}) as resp:
            answer = (await resp.json())[0]
        job = await wait_until(lambda: _delivered(daemon, answer["id_sms_api"]), what="delivery")
        assert job.device_id == "sim-1"


async def _delivered(daemon, id_sms_api):
    job = await daemon.store.get_job("user@email.com", id_sms_api)
    return job if job and job.state == "delivered" else None


async def test_silent_client_is_dropped_after_the_hello_timeout(tmp_path, monkeypatch):
    from bridge.dispatch import listener as agents
    monkeypatch.setattr(agents, "HELLO_TIMEOUT", 0.2)
    async with running(raw_config(tmp_path)) as daemon:
        async with websockets.connect(f"ws://127.0.0.1:{daemon.listener.port}") as ws:
            code, reason = await closed_with(ws)
        assert code == p.CLOSE_POLICY and "no hello" in reason
