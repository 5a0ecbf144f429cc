"""The termux route end to end: the real daemon, Debian's real adb server, and a
virtual phone with Termux and Termux:API behind it.

Phone connected → each set-up step until ready (the helper step names the
command to type once in Termux; the test types it) → send → sent (never
delivered: termux-sms-send asks for no report) → an incoming SMS and a missed
call reported once → unplugged → offline → plugged in again → nothing lost or
doubled. Also: a permission Android refuses to grant is a step, not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
from android_env import ACCOUNT, adb_server, android_config, plugged  # noqa: F401 - adb_server is a fixture
from conftest import running, wait_until
from test_android_smsgate_e2e import _count, _is, job_state, send, step_of

from bridge.cli import devices_table
from bridge.devices.android.steps import NEEDS_USER
from bridge.ops import pair as pair_cli


def kill_helper(home: Path) -> None:
    """The helper runs detached (as on a phone): stop it by the pid in its lock file."""
    lock = home / ".simbridge" / "helper.lock"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(lock.read_text().strip()), signal.SIGTERM)


async def test_termux_route_from_plug_to_replug(tmp_path, adb_server):  # noqa: F811
    with plugged(adb_server, tmp_path / "phone", apps=("termux",)) as phone:
        config = android_config(tmp_path, adb_server, phone, route="termux")
        try:
            async with running(config) as daemon, aiohttp.ClientSession() as http:
                await wait_until(lambda: step_of(daemon)[:2] == (NEEDS_USER, "authorised"), within=15,
                                 what="the authorised step")
                phone.allow_usb_debugging()
                # The helper step: the one command to type once in Termux.
                await wait_until(lambda: step_of(daemon)[:2] == (NEEDS_USER, "helper"), within=15,
                                 what="the helper step")
                reason = step_of(daemon)[2]
                command = reason.partition("run: ")[2]
                assert command.startswith("pkg install -y python termux-api;"), reason
                printed = io.StringIO()  # `simbridge pair --device p1` prints the same command
                with redirect_stdout(printed):
                    await asyncio.to_thread(pair_cli.pair, config, "p1")
                assert command in printed.getvalue()
                assert "p1" not in daemon.dispatcher.sessions
                # Android 14: the phantom-process monitor is switched off over adb
                assert phone.phone.state.settings["global"].get("settings_enable_monitor_phantom_procs") == "false"
                assert "com.termux" in phone.phone.state.deviceidle_whitelist
                # in a thread: the installer talks to the daemon, whose loop is this one
                code, out, err = await asyncio.to_thread(phone.call, phone.termux.type_command(command), 60)
                assert "helper installed and started" in out, (code, out, err)
                assert phone.termux_api.jobs, "the keeper job is scheduled (persisted)"
                await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=20, what="online")
                row = daemon.devices_view(None)[0]
                assert row["state"] == "online" and row["delivery_reports"] is False

                id_sms_api = await send(http, daemon, "Bonjour depuis Termux")
                await wait_until(lambda: _is(job_state(daemon, id_sms_api), "sent"), within=20, what="sent")

                phone.do(lambda: phone.phone.receive_sms("+33698765432", "Réponse"))
                phone.do(lambda: phone.phone.receive_call("+33611223344"))
                await wait_until(lambda: daemon.store.inbound(ACCOUNT), within=10, what="inbound stored")
                await wait_until(lambda: daemon.store.calls(ACCOUNT), within=10, what="call stored")

                phone.call(phone.phone.unplug())
                await wait_until(lambda: "p1" not in daemon.dispatcher.sessions, within=15, what="offline")
                adb_server.disconnect(phone.address)
                phone.do(lambda: phone.phone.receive_sms("+33698765432", "pendant la coupure"))
                phone.call(phone.phone.replug())
                adb_server.connect(phone.address)
                await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=30, what="online again")
                await wait_until(lambda: _count(daemon.store.inbound(ACCOUNT), 2), within=10, what="second SMS")
                # the helper came back through the new adb reverse: a send still goes
                id2 = await send(http, daemon, "Encore là")
                await wait_until(lambda: _is(job_state(daemon, id2), "sent"), within=20, what="sent after replug")
                texts = [r["text"] for r in await daemon.store.inbound(ACCOUNT)]
                assert sorted(texts) == ["Réponse", "pendant la coupure"]
                assert len(await daemon.store.calls(ACCOUNT)) == 1
                assert await job_state(daemon, id_sms_api) == "sent"  # and never "delivered"
        finally:
            kill_helper(phone.termux.home)


async def test_termux_helper_after_a_permission_loss_and_a_reboot(tmp_path, adb_server):  # noqa: F811
    """Termux:API loses SEND_SMS (revoked in Settings): its {"error": …} answer puts the job
    back in the queue and the phone at a step; the bridge grants it again and the job goes.
    Then the phone reboots (its processes die): the persisted job brings the helper back."""
    with plugged(adb_server, tmp_path / "phone", apps=("termux",)) as phone:
        phone.allow_usb_debugging()
        config = android_config(tmp_path, adb_server, phone, route="termux")
        try:
            async with running(config) as daemon, aiohttp.ClientSession() as http:
                await wait_until(lambda: step_of(daemon)[:2] == (NEEDS_USER, "helper"), within=15,
                                 what="the helper step")
                command = step_of(daemon)[2].partition("run: ")[2]
                await asyncio.to_thread(phone.call, phone.termux.type_command(command), 60)
                await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=20, what="online")

                phone.do(lambda: phone.termux_api.package.granted.discard("android.permission.SEND_SMS"))
                id1 = await send(http, daemon, "Après la révocation")
                await wait_until(lambda: phone.termux_api.dialogs, within=15, what="Termux:API asked")
                await wait_until(lambda: _is(job_state(daemon, id1), "sent"), within=25, what="sent after the grant")
                assert "android.permission.SEND_SMS" in phone.termux_api.package.granted

                kill_helper(phone.termux.home)  # a reboot ends every process…
                await asyncio.to_thread(phone.call, phone.phone.reboot())
                adb_server.disconnect(phone.address)
                adb_server.connect(phone.address)
                assert await asyncio.to_thread(phone.call, phone.termux_api.run_jobs()) == 1  # …the job survives
                await wait_until(lambda: daemon.dispatcher.sessions.get("p1"), within=30, what="online again")
                id2 = await send(http, daemon, "Après le redémarrage")
                await wait_until(lambda: _is(job_state(daemon, id2), "sent"), within=25, what="sent after reboot")
        finally:
            kill_helper(phone.termux.home)


async def test_a_permission_android_refuses_is_a_step_not_a_crash(tmp_path, adb_server):  # noqa: F811
    """An SMS Gateway build whose manifest does not request SEND_SMS: Android refuses
    ``pm grant`` (SecurityException "has not requested permission"); the phone
    waits at the permissions step, with Android's words, and nothing crashes."""
    with plugged(adb_server, tmp_path / "phone") as phone:
        gate = phone.smsgate
        assert gate is not None
        phone.do(lambda: setattr(gate.package, "requested",
                                 tuple(p for p in gate.package.requested if not p.endswith(".SEND_SMS"))))
        phone.allow_usb_debugging()
        config = android_config(tmp_path, adb_server, phone, route="smsgate",
                                smsgate_password=gate.data["password"])
        async with running(config) as daemon:
            state: Any = await wait_until(lambda: step_of(daemon)[1] == "permissions" and step_of(daemon),
                                          within=15, what="the permissions step")
            assert state[0] == NEEDS_USER
            assert "SEND_SMS" in state[2] and "has not requested permission" in state[2], state
            row = daemon.devices_view(None)[0]
            assert row["state"] == NEEDS_USER and row["step"] == "permissions"
            table = devices_table(daemon.devices_view(None))
            assert "needs_user (permissions)" in table and "has not requested permission" in table
            assert daemon.kinds.get("android").supervisor.units[phone.address].task is not None  # still running
