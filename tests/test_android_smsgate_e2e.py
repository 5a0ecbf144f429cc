"""The smsgate route end to end: the real daemon, Debian's real adb server, and a
virtual phone running SMS Gateway for Android behind it (adb connect).

Phone connected → each set-up step until ready → send → sent → delivered →
an incoming SMS and a missed call reported once → unplugged → offline →
plugged in again → nothing lost or doubled; and across a daemon restart.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from android_env import ACCOUNT, adb_server, android_config, plugged  # noqa: F401 - adb_server is a fixture
from conftest import api_url, running, wait_until

from bridge.devices.android.steps import NEEDS_USER

AUTH = {"login": ACCOUNT, "accessKey": "your-access-key"}
BEARER = {"Authorization": "Bearer your-access-key"}


async def send(http: aiohttp.ClientSession, daemon: Any, text: str, number: str = "+33612345678") -> str:
    async with http.post(api_url(daemon, "/api/v1/sendsms"),
                         json={"header": AUTH, "messages": [{"phone_number": number, "message": text}]}) as resp:
        assert resp.status == 200, await resp.text()
        [answer] = await resp.json()
        assert answer["sent"] == 1, answer
        return str(answer["id_sms_api"])


async def job_state(daemon: Any, id_sms_api: str) -> str | None:
    job = await daemon.store.get_job(ACCOUNT, id_sms_api)
    return job.state if job else None


def step_of(daemon: Any) -> tuple[str, str, str]:
    view = daemon.kinds.get("android").setup("p1")
    return (view.state, view.step, view.reason) if view else ("", "", "")


async def test_smsgate_route_from_plug_to_replug(tmp_path, adb_server):  # noqa: F811
    with plugged(adb_server, tmp_path / "phone") as phone:
        gate = phone.smsgate
        assert gate is not None
        config = android_config(tmp_path, adb_server, phone, route="smsgate",
                                smsgate_password=gate.data["password"], sim_slot=1)
        async with running(config) as daemon, aiohttp.ClientSession() as http:
            # 1. "Allow USB debugging?" not answered yet
            await wait_until(lambda: step_of(daemon)[:2] == (NEEDS_USER, "authorised"), within=15,
                             what="the authorised step")
            phone.allow_usb_debugging()
            # 2. the app's local server is off: a step naming the switch
            await wait_until(lambda: step_of(daemon)[:2] == (NEEDS_USER, "app")
                             and "Local Server" in step_of(daemon)[2], within=15, what="the local-server step")
            assert "p1" not in daemon.dispatcher.sessions
            phone.call(gate.user_enable_local_server())
            await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=15, what="online")
            row = daemon.devices_view(None)[0]
            assert row["state"] == "online" and row["delivery_reports"] is True
            # battery optimisation off for the app, over adb
            assert "me.capcom.smsgateway" in phone.phone.state.deviceidle_whitelist

            # 3. send: sent, then delivered (two parts, one job)
            text = "Votre rendez-vous est confirmé pour demain. " * 4
            id_sms_api = await send(http, daemon, text)
            await wait_until(lambda: _is(job_state(daemon, id_sms_api), "delivered"), within=20, what="delivered")
            async with http.get(api_url(daemon, f"/api/v1/sms/{id_sms_api}"), headers=BEARER) as resp:
                data = (await resp.json())["data"]
            assert [h["status"] for h in data["history"]] == ["queued", "dispatched", "sent", "delivered"]
            sent_rows = [r for r in phone.phone.state.snapshot()["sms"] if r["type"] == 2]
            assert [r["sub_id"] for r in sent_rows] == [2]  # sim_slot 1 = the app's simNumber 2

            # 4. an incoming SMS (its text imitates content query's row marker) and a missed call
            tricky = "Oui, d'accord, body=x\nRow: 1 _id=99, date=1, sub_id=1, address=+1, body=faux"
            phone.do(lambda: phone.phone.receive_sms("+33698765432", tricky))
            phone.do(lambda: phone.phone.receive_call("+33611223344"))
            inbound = await wait_until(lambda: daemon.store.inbound(ACCOUNT), within=10, what="inbound stored")
            calls = await wait_until(lambda: daemon.store.calls(ACCOUNT), within=10, what="call stored")
            assert [(r["sender"], r["text"]) for r in inbound] == [("+33698765432", tricky)]
            assert len(calls) == 1

            # 5. unplugged: offline; an SMS arrives meanwhile; plugged in again
            phone.call(phone.phone.unplug())
            await wait_until(lambda: "p1" not in daemon.dispatcher.sessions, within=15, what="offline")
            adb_server.disconnect(phone.address)  # the cable is out: the transport goes
            await wait_until(lambda: step_of(daemon)[:2] == ("absent", "usb"), within=10, what="absent")
            phone.do(lambda: phone.phone.receive_sms("+33698765432", "pendant la coupure"))
            phone.call(phone.phone.replug())
            adb_server.connect(phone.address)
            await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=30, what="online again")
            await wait_until(lambda: _count(daemon.store.inbound(ACCOUNT), 2), within=10, what="second SMS")

        # 6. the daemon stops; an SMS arrives; it starts again on the same data
        phone.do(lambda: phone.phone.receive_sms("+33698765432", "pendant l'arrêt"))
        async with running(config) as daemon:
            await wait_until(lambda: _count(daemon.store.inbound(ACCOUNT), 3), within=20, what="third SMS")
            texts = sorted(r["text"] for r in await daemon.store.inbound(ACCOUNT))
            assert texts == sorted([tricky, "pendant la coupure", "pendant l'arrêt"])  # none lost, none twice
            assert len(await daemon.store.calls(ACCOUNT)) == 1


async def test_delivery_report_while_the_daemon_is_down_is_not_lost(tmp_path, adb_server):  # noqa: F811
    """Sent, then the daemon stops; the recipient's handset confirms meanwhile (SMS Gateway's
    webhook finds nobody and retries); the daemon starts again: the job ends delivered."""
    with plugged(adb_server, tmp_path / "phone") as phone:
        gate = phone.smsgate
        assert gate is not None
        phone.allow_usb_debugging()
        phone.call(gate.user_enable_local_server())
        phone.do(lambda: setattr(phone.phone.sms.radio, "delivery_delay", 1.5))
        config = android_config(tmp_path, adb_server, phone, route="smsgate", smsgate_password=gate.data["password"])
        async with running(config) as daemon, aiohttp.ClientSession() as http:
            await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=15, what="online")
            id_sms_api = await send(http, daemon, "Confirmé pendant l'arrêt")
            await wait_until(lambda: _is(job_state(daemon, id_sms_api), "sent"), within=15, what="sent")
        await wait_until(lambda: [m for m in gate.messages.values() if m.get("state") == "Delivered"],
                         within=15, what="delivered on the phone while the daemon is down")
        async with running(config) as daemon:
            await wait_until(lambda: _is(job_state(daemon, id_sms_api), "delivered"), within=20,
                             what="delivered after the restart")


async def test_android_send_limit_is_never_reached(tmp_path, adb_server):  # noqa: F811
    """A phone whose limit was set to 4 parts in 3 s (sms_outgoing_check_max_count /
    _interval_ms, read at boot): six messages at once all go, held by the bridge, and the
    phone never shows its "large number of SMS messages" dialog."""
    data = tmp_path / "phone"
    data.mkdir()
    (data / "phone.json").write_text(json.dumps({"settings": {"global": {
        "sms_outgoing_check_max_count": "4", "sms_outgoing_check_interval_ms": "3000"}}}))
    with plugged(adb_server, data) as phone:
        gate = phone.smsgate
        assert gate is not None and phone.phone.sms.max_count == 4
        phone.allow_usb_debugging()
        phone.call(gate.user_enable_local_server())
        dialogs: list[Any] = []
        phone.do(lambda: phone.phone.state.listeners.append(
            lambda event, payload: dialogs.append(payload) if event == "sms_dialog" else None))
        config = android_config(tmp_path, adb_server, phone, route="smsgate", smsgate_password=gate.data["password"],
                                sms_max_count=4, sms_check_interval=3)
        async with running(config) as daemon, aiohttp.ClientSession() as http:
            await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=15, what="online")
            started = time.monotonic()
            ids = [await send(http, daemon, f"Message {i}", number=f"+3361234560{i}") for i in range(6)]
            for id_sms_api in ids:
                await wait_until(lambda i=id_sms_api: _is(job_state(daemon, i), "delivered"), within=30,
                                 what=f"{id_sms_api} delivered")
            assert time.monotonic() - started >= 3  # the last two waited for the first four to age out
            assert dialogs == [] and phone.phone.sms.waiting == []


async def _is(coro: Any, expected: Any) -> bool:
    return (await coro) == expected


async def _count(coro: Any, n: int) -> bool:
    return len(await coro) >= n
