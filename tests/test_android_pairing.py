"""Pairing a phone by QR code: the URI `simbridge pair` prints, given to the Android
agent archive (`--pair URI`), connects it to the real daemon over TLS with the
certificate pinned; a URI pinned to another certificate is refused before the
token is ever sent."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sys
from contextlib import redirect_stdout

from conftest import make_config, running, timeout, wait_until
from fakes.termux.termux_fake import PhoneState
from ops_util import self_signed

from bridge.ops import pair as pair_cli
from device_agents.android.build import build_archive
from device_agents.pairing import build_uri, parse_uri

DEVICE = "phone-1"


async def start_agent(archive, phone, data_dir, uri):
    return await asyncio.create_subprocess_exec(
        sys.executable, "-S", str(archive), "--pair", uri, "--data-dir", str(data_dir),
        env=phone.env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def stop(proc):
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout(10))


async def test_qr_uri_pairs_the_phone_agent_over_pinned_tls(tmp_path):
    cert, key = self_signed(tmp_path)
    config = make_config(tmp_path, devices=[{"id": DEVICE, "kind": "android", "account": "user@email.com",
                                             "serial": "R58M123ABC", "standalone": True}],
                         agents={"tls_cert": str(cert), "tls_key": str(key)})
    archive = build_archive(tmp_path / "simbridge-agent.pyz")
    phone = PhoneState(tmp_path / "phone", timezone="Europe/Paris")
    async with running(config) as daemon:
        url = f"wss://127.0.0.1:{daemon.listener.port}"
        out = io.StringIO()
        with redirect_stdout(out):
            await asyncio.to_thread(pair_cli.pair, config, DEVICE, url=url, qr=False)
        uri = re.search(r"simbridge://pair\?\S+", out.getvalue()).group(0)
        info = parse_uri(uri)
        assert info.device_id == DEVICE and info.fingerprint and info.url == url

        # Pinned to some other certificate: refused, the daemon never sees a hello.
        other_cert, _ = self_signed(tmp_path, name="other")
        from device_agents.pairing import certificate_fingerprint
        wrong = build_uri(url=url, device_id=DEVICE, token=info.token,
                          fingerprint=certificate_fingerprint(other_cert.read_text()))
        impostor = await start_agent(archive, phone, tmp_path / "impostor-home", wrong)
        try:
            await asyncio.sleep(1.0)  # give it time to (wrongly) get through
            assert DEVICE not in daemon.dispatcher.sessions
        finally:
            await stop(impostor)

        agent = await start_agent(archive, phone, tmp_path / "home", uri)
        try:
            await wait_until(lambda: DEVICE in daemon.dispatcher.sessions, within=20, what="paired agent online")
            hello = daemon.dispatcher.sessions[DEVICE].hello
            assert hello.agent.startswith("simbridge-android/") and not hello.capabilities.delivery_reports
        finally:
            await stop(agent)


def test_a_bad_uri_is_refused_with_a_clear_error(tmp_path, capsys):
    from device_agents.android.agent import main
    code = main(["--pair", "https://example.com/not-a-pairing-uri", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "not a pairing URI" in capsys.readouterr().err
