"""An Android phone end to end against the real daemon: the tests' own adb server
(real adb host protocol, adbutils unchanged), the real agent archive run as a local
process when the RUN_COMMAND intent comes, fake termux-* commands behind it.

plugged → set up → agent connects → SMS sent and confirmed → incoming SMS and a
missed call recorded → click-to-call through adb → unplugged → offline →
replugged → online, with nothing lost or doubled.
"""

from __future__ import annotations

import aiohttp
import pytest
from conftest import api_url, free_port, make_config, running, wait_until
from fakes.adb_server import FakeAdbServer

SERIAL = "R58M123ABC"
AUTH = {"login": "user@email.com", "accessKey": "your-access-key"}
BEARER = {"Authorization": "Bearer your-access-key"}




@pytest.fixture
def adb(tmp_path):
    server = FakeAdbServer(tmp_path / "adb")
    server.start()
    yield server
    server.close()


async def devices(http, daemon):
    async with http.get(api_url(daemon, "/api/v1/devices"), headers=BEARER) as resp:
        return {d["id"] or d["serial"]: d for d in (await resp.json())["data"]}


async def state(http, daemon):
    return (await devices(http, daemon))["phone-1"]["state"]


async def job_state(daemon, id_sms_api):
    job = await daemon.store.get_job("user@email.com", id_sms_api)
    return job.state if job else None


async def test_phone_plugged_set_up_used_unplugged_and_replugged(tmp_path, adb):
    config = make_config(
        tmp_path,
        devices=[{"id": "phone-1", "kind": "android", "account": "user@email.com", "serial": SERIAL}],
        android={"adb_server": f"127.0.0.1:{adb.port}", "start_adb_server": False,
                 "device_port": free_port(), "poll_interval": 0.05, "confirm_timeout": 10})
    assert config.devices[0].max_per_minute == 25  # under Android's own 30 a minute
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        assert await state(http, daemon) == "absent"
        phone = adb.add_phone(SERIAL, timezone="Europe/Paris")
        await wait_until(lambda: _is(state(http, daemon), "online"), within=30, what="phone online")
        stranger = adb.add_phone("ZY22ABCDEF", run_agents=False, loopback="127.0.0.2")
        listed = await wait_until(lambda: _get(devices(http, daemon), "ZY22ABCDEF"), what="unconfigured phone")
        assert listed["state"] == "unconfigured" and stranger.shell_log == []

        # An SMS through the API is sent by the phone and confirmed from its sent box.
        async with http.post(api_url(daemon, "/api/v1/sendsms"), json={
                "header": AUTH, "messages": [{"phone_number": "+33612345678", "message": "Bonjour"}]}) as resp:
            [answer] = await resp.json()
        await wait_until(lambda: _is(job_state(daemon, answer["id_sms_api"]), "sent"), within=15, what="sent")
        assert [s["text"] for s in phone.termux.sends()] == ["Bonjour"]

        # Things come in.
        phone.termux.receive_sms("+33699999999", "Réponse")
        phone.termux.add_call("+33688888888", "MISSED")
        await wait_until(lambda: _count(daemon.store.inbound("user@email.com"), 1), what="incoming SMS")
        await wait_until(lambda: _count(daemon.store.calls("user@email.com"), 1), what="missed call")

        # Click-to-call goes through adb on the bridge side.
        async with http.post(api_url(daemon, "/api/v1/clicTocall"), json={"header": {
                **AUTH, "type": "clicToCall", "phone_number": "+33611223344"}}) as resp:
            assert resp.status == 200, await resp.text()
        await wait_until(lambda: phone.calls_placed == ["+33611223344"], within=15, what="call placed")
        await wait_until(lambda: _count(daemon.store.calls("user@email.com"), 2), what="outgoing call reported")

        # Unplugged: offline. Replugged: online again by itself, and what came in
        # meanwhile arrives once.
        adb.unplug(SERIAL)
        await wait_until(lambda: _in(state(http, daemon), ("absent", "offline")), within=15, what="offline")
        phone.termux.receive_sms("+33677777777", "while unplugged")
        adb.plug(SERIAL)
        await wait_until(lambda: _is(state(http, daemon), "online"), within=30, what="online again")
        inbound = await wait_until(lambda: _count(daemon.store.inbound("user@email.com"), 2), within=15,
                                   what="the SMS from while it was away")
        assert sorted(i["text"] for i in inbound) == ["Réponse", "while unplugged"]
        calls = await daemon.store.calls("user@email.com")
        assert sorted((c["direction"], c["number"]) for c in calls) == [
            ("missed", "+33688888888"), ("outgoing", "+33611223344")]
        assert [s["text"] for s in phone.termux.sends()] == ["Bonjour"]  # never twice


async def _is(coro, value):
    return (await coro) == value


async def _in(coro, values):
    return (await coro) in values


async def _get(coro, key):
    return (await coro).get(key)


async def _count(coro, n):
    rows = await coro
    return rows if len(rows) == n else None


async def test_a_phone_added_by_a_reload_is_set_up_without_a_restart(tmp_path, adb):
    android = {"adb_server": f"127.0.0.1:{adb.port}", "start_adb_server": False, "device_port": free_port(),
               "poll_interval": 0.05, "confirm_timeout": 10}
    virtual = {"id": "sim-1", "kind": "virtual", "account": "user@email.com", "latency": 0}
    before = make_config(tmp_path, devices=[virtual], android=android)
    after = make_config(tmp_path, devices=[virtual, {"id": "phone-1", "kind": "android",
                                                     "account": "user@email.com", "serial": SERIAL}],
                        android=android)
    adb.add_phone(SERIAL, timezone="Europe/Paris")
    async with running(before) as daemon, aiohttp.ClientSession() as http:
        await wait_until(lambda: "sim-1" in daemon.dispatcher.sessions, what="virtual phone online")
        session = daemon.dispatcher.sessions["sim-1"]
        assert daemon.kinds.get("android") is None  # nothing of adb loaded while no phone is configured
        await daemon.reload(after)
        await wait_until(lambda: _is(state(http, daemon), "online"), within=30, what="phone set up after reload")
        assert daemon.dispatcher.sessions["sim-1"] is session  # the other device never noticed
        await daemon.reload(before)  # and taken away again
        await wait_until(lambda: "phone-1" not in daemon.dispatcher.sessions, what="phone let go")
        android = daemon.kinds.get("android")
        assert android is not None and android.supervisor is None
        assert daemon.dispatcher.sessions["sim-1"] is session
