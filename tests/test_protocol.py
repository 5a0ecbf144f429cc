"""The device protocol: frames both ways, and what a bad frame does to a session."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import websockets
from conftest import api_url, make_config, running, timeout, wait_until

from device_agents import protocol as p

MESSAGES = [
    p.Challenge(nonce="ab" * 32),
    p.Hello(device_id="sim-1", proof="cd" * 32, agent="test/1",
            capabilities=p.Capabilities(sms=True, calls=True, delivery_reports=True, keeps_caps=True),
            sims=(p.Sim(slot=0, number="+33612345678", operator="Orange"),), window=4,
            ledger=(p.LedgerEntry(job_id="7.0a1b2c3d4e5f", state="sent"),), timezone="Europe/Paris",
            journal="0123456789abcdef", sent=((59.5, 1), (0.25, 3))),
    p.Welcome(device_id="sim-1", window=4, lease_s=30.0, server_time=1.5),
    p.Welcome(device_id="sim-1", window=4, lease_s=30.0, server_time=1.5,
              caps=p.Caps(per_minute=25, per_hour=200, per_day=0)),
    p.NewCaps(caps=p.Caps(per_minute=10, per_hour=0, per_day=500)),
    p.NewCaps(),
    p.Jobs(jobs=(p.SendSms(job_id="1", to="+33612345678", text="héllo €", report=True, reference="abc"),
                 p.Dial(job_id="2", to="+33612345678", hangup_after_s=20.0))),
    p.Jobs(jobs=(p.SendSms(job_id="3", to="+33612345678", text="again", attempt=2),
                 p.Dial(job_id="4", to="+33612345678", attempt=1))),
    p.Events(events=(
        p.JobState(event_id="e1", job_id="1", state="sent", at=1.0, parts=2),
        p.JobState(event_id="e0", job_id="3", state="rejected", at=1.0, attempt=2),
        p.SmsReceived(event_id="e2", sender="+33612345678", text="salut", at=2.0, sim=1),
        p.CallEvent(event_id="e3", direction="missed", number="+33612345678", at=3.0),
        p.CallNote(event_id="e4", number="+33612345678", text="call back", at=4.0))),
    p.Ack(event_ids=("e1", "e2")),
    p.Status(at=5.0, battery=80, charging=False, signal=60, network="registered", operator="Orange"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.type)
def test_every_message_survives_encode_and_decode(message):
    assert p.decode(p.encode(message)) == message


def test_caps_in_the_welcome_and_keeps_caps_in_the_hello_are_optional_both_ways():
    # From an older bridge: no caps, nothing for the agent to keep.
    old = p.decode('{"type": "welcome", "device_id": "d", "version": 2, "window": 8, "lease_s": 60, '
                   '"server_time": 1}')
    assert isinstance(old, p.Welcome) and old.caps is None
    # From an older agent: it does not say it keeps caps.
    hello = p.decode('{"type": "hello", "device_id": "d", "proof": "t", "version": 2, '
                     '"capabilities": {"sms": true}}')
    assert isinstance(hello, p.Hello) and hello.capabilities.keeps_caps is False
    # What an older agent reads of a newer welcome: the fields it knows (unknown ones are ignored).
    frame = p.encode(p.Welcome(device_id="d", caps=p.Caps(per_minute=25)))
    assert '"caps":{"per_minute":25,"per_hour":0,"per_day":0}' in frame
    assert p.decode(frame.replace('"caps"', '"future_field"')) == p.Welcome(device_id="d")
    # A cap left out is no cap.
    caps = p.decode('{"type": "welcome", "device_id": "d", "version": 2, "window": 8, "lease_s": 60, '
                    '"server_time": 1, "caps": {"per_hour": 100}}').caps  # type: ignore[union-attr]
    assert caps == p.Caps(per_minute=0, per_hour=100, per_day=0)


@pytest.mark.parametrize("frame, complaint", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "bogus"}', "unknown frame type"),
    ('{"no": "type"}', "unknown frame type"),
    ('{"type": "hello", "proof": "t", "version": 1}', "device_id"),
    ('{"type": "hello", "device_id": 5, "proof": "t", "version": 1}', "must be a string"),
    ('{"type": "hello", "device_id": "d", "proof": "t", "version": true}', "boolean"),
    ('{"type": "events", "events": [{"kind": "job_state", "event_id": "1", "job_id": "1", '
     '"state": "teleported", "at": 1}]}', "unknown job state"),
    ('{"type": "events", "events": [{"kind": "bogus"}]}', "unknown event kind"),
    ('{"type": "hello", "device_id": "d", "proof": "t", "version": 2, "sent": [[1.5, 0]]}', "hello.sent"),
    ('{"type": "hello", "device_id": "d", "proof": "t", "version": 2, "sent": [[-1, 1]]}', "hello.sent"),
    ('{"type": "hello", "device_id": "d", "proof": "t", "version": 2, "sent": [[1, 1, 1]]}', "hello.sent"),
    ('{"type": "hello", "device_id": "d", "proof": "t", "version": 2, "sent": [[90000, 1]]}', "hello.sent"),
    ('{"type": "events", "events": [{"kind": "call_event", "event_id": "1", "direction": "sideways", '
     '"number": "1", "at": 1}]}', "unknown call direction"),
    ('{"type": "status", "at": 1, "battery": 140}', "out of range"),
    ('{"type": "status", "at": NaN}', "finite"),
    ('{"type": "hello", "device_id": "d", "proof": "t", "version": 2, "journal": "a/b"}', "journal"),
    ('{"type": "welcome", "device_id": "d", "version": 2, "window": 8, "lease_s": 60, "server_time": 1, '
     '"caps": {"per_minute": -1}}', "out of range"),
    ('{"type": "welcome", "device_id": "d", "version": 2, "window": 8, "lease_s": 60, "server_time": 1, '
     '"caps": [25]}', "welcome.caps: must be an object"),
])
def test_bad_frames_say_what_is_wrong(frame, complaint):
    with pytest.raises(p.RemoteProtocolError, match=complaint):
        p.decode(frame)


def test_a_hello_without_a_journal_id_is_still_version_2():
    """Agents made before journal ids: the field defaults to "" (keyed as before)."""
    hello = p.decode('{"type": "hello", "device_id": "d", "proof": "t", "version": 2}')
    assert isinstance(hello, p.Hello) and hello.journal == "" and p.PROTOCOL_VERSION == 2


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


def hello(token="raw-token", **over):
    """A hello frame answering the challenge whose nonce the test passes in."""
    def frame(nonce: str) -> str:
        body = {"type": "hello", "version": p.PROTOCOL_VERSION, "device_id": "raw", "window": 4,
                "capabilities": {"sms": True}}
        body.update(over)
        body.setdefault("proof", p.hello_proof(p.token_key(token), body["device_id"], nonce))
        return json.dumps(body)
    return frame


async def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout(5))
    return ws.close_code, ws.close_reason


BAD_SESSIONS = [
    ("garbage hello", ["{{{"], p.CLOSE_POLICY, "bad hello"),
    # Every authentication failure closes alike: nothing tells which device ids exist.
    ("wrong token", [hello(token="nope")], p.CLOSE_POLICY, p.AUTH_FAILED),
    ("unknown device", [hello(device_id="ghost")], p.CLOSE_POLICY, p.AUTH_FAILED),
    ("proof of another nonce", [hello(proof=p.hello_proof(p.token_key("raw-token"), "raw", "0" * 64))],
     p.CLOSE_POLICY, p.AUTH_FAILED),
    ("old version", [hello(version=1)], p.CLOSE_POLICY, "version"),
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
                challenge = p.decode(await asyncio.wait_for(ws.recv(), timeout(5)))
                assert isinstance(challenge, p.Challenge)
                for frame in frames:
                    await ws.send(frame(challenge.nonce) if callable(frame) else frame)
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


async def test_a_sniffed_hello_cannot_be_replayed(tmp_path):
    async with running(raw_config(tmp_path)) as daemon:
        url = f"ws://127.0.0.1:{daemon.listener.port}"
        async with websockets.connect(url) as ws:
            challenge = p.decode(await asyncio.wait_for(ws.recv(), timeout(5)))
            sniffed = hello()(challenge.nonce)
            assert "raw-token" not in sniffed  # the token itself never crosses the wire
            await ws.send(sniffed)
            assert isinstance(p.decode(await asyncio.wait_for(ws.recv(), timeout(5))), p.Welcome)
            # The welcome may reach us before the session is registered: wait for it, so that
            # "gone" below means gone, not "not there yet".
            await wait_until(lambda: "raw" in daemon.dispatcher.sessions, what="first session registered")
        await wait_until(lambda: "raw" not in daemon.dispatcher.sessions, what="first session gone")
        async with websockets.connect(url) as ws:
            await asyncio.wait_for(ws.recv(), timeout(5))  # a fresh challenge
            await ws.send(sniffed)
            assert await closed_with(ws) == (p.CLOSE_POLICY, p.AUTH_FAILED)
        assert "raw" not in daemon.dispatcher.sessions


async def test_connections_saying_nothing_are_capped_and_the_api_carries_on(tmp_path):
    config = raw_config(tmp_path, agents={"max_unauthenticated": 5, "hello_timeout_s": timeout(30)})
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{daemon.listener.port}"
        # The daemon's own phone first: connecting while the slots are full, it would be turned
        # away too (and come back later), and counted.
        await wait_until(lambda: "sim-1" in daemon.dispatcher.sessions, what="the daemon's own phone online")
        idle = [await websockets.connect(url) for _ in range(5)]
        try:
            async with websockets.connect(url) as extra:
                assert await closed_with(extra) == (p.CLOSE_TRY_LATER,
                                                    "too many connections saying hello; try again later")
            assert daemon.listener.turned_away == 1
            async with http.get(api_url(daemon, "/api/v1/openapi.json")) as resp:
                assert resp.status == 200
        finally:
            for ws in idle:
                await ws.close()
        await wait_until(lambda: daemon.listener._unauthenticated == 0, what="idle connections gone")
        # Room again: a real agent gets in.
        async with websockets.connect(url) as ws:
            challenge = p.decode(await asyncio.wait_for(ws.recv(), timeout(5)))
            await ws.send(hello()(challenge.nonce))
            assert isinstance(p.decode(await asyncio.wait_for(ws.recv(), timeout(5))), p.Welcome)


async def _delivered(daemon, id_sms_api):
    job = await daemon.store.get_job("user@email.com", id_sms_api)
    return job if job and job.state == "delivered" else None


async def test_silent_client_is_dropped_after_the_hello_timeout(tmp_path):
    async with running(raw_config(tmp_path, agents={"hello_timeout_s": 0.2})) as daemon:
        async with websockets.connect(f"ws://127.0.0.1:{daemon.listener.port}") as ws:
            code, reason = await closed_with(ws)
        assert code == p.CLOSE_POLICY and "no hello" in reason


async def test_a_quiet_agent_is_pinged_and_one_that_answers_nothing_is_cut(tmp_path):
    """The bridge pings only agents it has heard nothing from for [agents] silence_s: one that
    answers (its pongs come from its websocket library, whatever the agent is doing) stays; one
    whose link is dead (here: the client reads nothing any more) is cut a third of that later."""
    silence = timeout(0.6)
    async with running(raw_config(tmp_path, agents={"silence_s": silence})) as daemon:
        url = f"ws://127.0.0.1:{daemon.listener.port}"
        async with websockets.connect(url, ping_interval=None) as ws:  # never pings on its own
            challenge = p.decode(await asyncio.wait_for(ws.recv(), timeout(5)))
            await ws.send(hello()(challenge.nonce))
            assert isinstance(p.decode(await asyncio.wait_for(ws.recv(), timeout(5))), p.Welcome)
            await wait_until(lambda: "raw" in daemon.dispatcher.sessions, what="session registered")
            session = daemon.dispatcher.sessions["raw"]
            # Quiet, but answering: pinged (its pong measured a latency) and still there after
            # several more periods of silence.
            for what in ("a ping answered", "another ping answered"):
                session.ws.latency = 0.0  # the library sets it from each pong
                await wait_until(lambda: session.ws.latency > 0, within=timeout(20), what=what)
            assert daemon.listener.silent_closed == 0
            assert daemon.dispatcher.sessions.get("raw") is session
            # Dead: nothing read, so no pong goes back.
            ws.transport.pause_reading()
            await wait_until(lambda: "raw" not in daemon.dispatcher.sessions, within=timeout(20),
                             what="the silent session cut")
            ws.transport.resume_reading()  # and now it finds its connection gone
            await closed_with(ws)
        assert daemon.listener.silent_closed == 1
        assert "no pong" in daemon.dispatcher.health["raw"].reason
        assert "sim-1" in daemon.dispatcher.sessions  # the daemon's own agent answers its pings


async def test_last_seen_of_an_online_device_is_when_its_agent_was_last_heard(tmp_path):
    """Agents send their status only when it changes: an online device's "last seen" moves with
    anything its agent sends, a bare ping included."""
    async with running(raw_config(tmp_path)) as daemon, \
            websockets.connect(f"ws://127.0.0.1:{daemon.listener.port}", ping_interval=None) as ws:
        challenge = p.decode(await asyncio.wait_for(ws.recv(), timeout(5)))
        await ws.send(hello()(challenge.nonce))
        assert isinstance(p.decode(await asyncio.wait_for(ws.recv(), timeout(5))), p.Welcome)
        await wait_until(lambda: "raw" in daemon.dispatcher.sessions, what="session registered")

        def last_seen() -> float:
            [row] = [r for r in daemon.devices_view(None) if r["id"] == "raw"]
            return row["last_seen"]
        before = last_seen()
        await wait_until(lambda: time.time() > before + 0.05, what="time to pass")
        await asyncio.wait_for(await ws.ping(), timeout(5))  # answered: heard by then
        assert before + 0.05 < last_seen() <= time.time()


# -- batches split to fit the frame limit ----------------------------------------------------------

def test_batches_are_split_to_fit_and_keep_their_order():
    texts = ["é" * p.MAX_TEXT for _ in range(60)]  # 60 × 20 kB: far over one frame
    events = [p.SmsReceived(event_id=f"e{i}", sender="+33612345678", text=t, at=1.0) for i, t in enumerate(texts)]
    frames = p.encode_batches(lambda batch: p.Events(events=batch), events)
    assert len(frames) > 1 and all(len(f.encode()) <= p.MAX_FRAME_BYTES for f in frames)
    decoded = [e for f in frames for e in p.decode(f).events]
    assert decoded == events
    small = [p.Ack(event_ids=("x",))]
    assert p.encode_batches(lambda batch: batch[0], small) == [p.encode(small[0])]


def test_an_item_that_cannot_fit_alone_is_our_bug():
    huge = p.SmsReceived(event_id="e", sender="+33612345678", text="x" * (p.MAX_FRAME_BYTES + 1), at=1.0)
    with pytest.raises(p.FrameTooBig):
        p.encode_batches(lambda batch: p.Events(events=batch), [huge])
