"""Pairing: the URI (device_agents/pairing.py), `simbridge pair` issuing a token
that the listener accepts and `--revoke` taking it back, live session included."""

from __future__ import annotations

import re

import pytest
import websockets
from conftest import running, timeout, wait_until
from ops_util import RawAgent, cli, write_config

from bridge import config as config_module
from device_agents import pairing
from device_agents import protocol as p

FP = "ab" * 32


def test_uri_round_trip():
    uri = pairing.build_uri(url="wss://10.0.0.5:8765/agents", device_id="phone-1", token="sbp_x-Y_z", fingerprint=FP)
    assert uri.startswith("simbridge://pair?url=wss%3A%2F%2F10.0.0.5%3A8765%2Fagents&device=phone-1&token=")
    info = pairing.parse_uri(f"  {uri}\n")
    assert info == pairing.PairingInfo(url="wss://10.0.0.5:8765/agents", device_id="phone-1",
                                       token="sbp_x-Y_z", fingerprint=FP)
    assert info.tls
    plain = pairing.parse_uri(pairing.build_uri(url="ws://127.0.0.1:8765", device_id="a", token="t"))
    assert plain.fingerprint is None and not plain.tls and pairing.client_ssl_context(plain) is None
    # Fingerprints as openssl prints them are accepted.
    colons = ":".join(FP[i:i + 2] for i in range(0, 64, 2)).upper()
    assert pairing.parse_uri(uri.replace(FP, colons)).fingerprint == FP


@pytest.mark.parametrize("uri, what", [
    ("https://pair?url=ws%3A%2F%2Fh%3A1&device=a&token=t", "not a pairing URI"),
    ("simbridge://pair?device=a&token=t", "url: missing"),
    ("simbridge://pair?url=ws%3A%2F%2Fh%3A1&token=t", "device: missing"),
    ("simbridge://pair?url=ws%3A%2F%2Fh%3A1&device=a", "token: missing"),
    ("simbridge://pair?url=http%3A%2F%2Fh%3A1&device=a&token=t", "url: must be a ws://"),
    ("simbridge://pair?url=ws%3A%2F%2Fh%3A1&device=a&token=t&token=u", "token: given more than once"),
    ("simbridge://pair?url=wss%3A%2F%2Fh%3A1&device=a&token=t&fp=12", "fp: must be"),
    (f"simbridge://pair?url=ws%3A%2F%2Fh%3A1&device=a&token=t&fp={FP}", "fp: given for a ws://"),
    ("simbridge://pair?" + "x" * 3000, "at most"),
])
def test_bad_uris_say_what_is_wrong(uri, what):
    with pytest.raises(pairing.PairingError, match=re.escape(what)):
        pairing.parse_uri(uri)


DEVICES = """
[[devices]]
id = "sim-1"
kind = "virtual"
account = "user@email.com"
max_per_minute = 0
latency = 0.0
delivery_delay = 0.0

[[devices]]
id = "phone-1"
kind = "virtual"
account = "user@email.com"
standalone = true
"""


async def test_pair_then_revoke(tmp_path):
    path, _, agents = write_config(tmp_path, devices=DEVICES)
    config = config_module.load(path)
    png = tmp_path / "pair.png"
    async with running(config) as daemon:
        code, out, err = await cli("pair", "--config", str(path), "--device", "phone-1", "--png", str(png))
        assert code == 0, err
        uri = re.search(r"simbridge://pair\S+", out).group(0)
        info = pairing.parse_uri(uri)
        assert info.device_id == "phone-1" and info.url == f"ws://127.0.0.1:{agents}"
        assert png.read_bytes().startswith(b"\x89PNG")
        assert "\u2588" in out or "\u2580" in out  # the QR code, drawn in the terminal
        # The store keeps the hash only.
        store_text = (tmp_path / "data" / "simbridge.db").read_bytes()
        assert info.token.encode() not in store_text

        agent = RawAgent(info.url, info.device_id, info.token)
        await agent.connect()
        assert isinstance(await agent.hello(), p.Welcome)
        await wait_until(lambda: "phone-1" in daemon.dispatcher.sessions, what="phone-1 online")

        # A wrong token is refused.
        intruder = RawAgent(info.url, "phone-1", info.token + "x")
        await intruder.connect()
        with pytest.raises(websockets.ConnectionClosed) as refused:
            await intruder.hello()
        assert (refused.value.rcvd.code, refused.value.rcvd.reason) == (p.CLOSE_POLICY, p.AUTH_FAILED)

        code, out, err = await cli("pair", "--config", str(path), "--device", "phone-1", "--revoke")
        assert code == 0, err
        assert "revoked 1 pairing token(s)" in out and "live session was closed" in out
        assert await agent.closed_code() == p.CLOSE_POLICY
        await wait_until(lambda: "phone-1" not in daemon.dispatcher.sessions, what="phone-1 offline")

        # The revoked token no longer opens a session.
        again = RawAgent(info.url, info.device_id, info.token)
        await again.connect()
        with pytest.raises(websockets.ConnectionClosed) as refused:
            await again.hello()
        assert (refused.value.rcvd.code, refused.value.rcvd.reason) == (p.CLOSE_POLICY, p.AUTH_FAILED)
        # In-daemon agents keep their derived token.
        assert "sim-1" in daemon.dispatcher.sessions

        code, _, err = await cli("pair", "--config", str(path), "--device", "nope")
        assert code != 0 and "no device 'nope'" in err


async def test_revoke_without_a_daemon(tmp_path):
    path, _, _ = write_config(tmp_path, devices=DEVICES)
    code, out, err = await cli("pair", "--config", str(path), "--device", "phone-1", "--no-qr",
                               "--url", "ws://192.168.1.20:8765")
    assert code == 0, err
    assert "ws%3A%2F%2F192.168.1.20%3A8765" in out
    code, out, err = await cli("pair", "--config", str(path), "--device", "phone-1", "--revoke", within=timeout(30))
    assert code == 0, err
    assert "revoked 1 pairing token(s)" in out and "not running" in out
