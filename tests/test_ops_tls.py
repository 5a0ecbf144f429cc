"""TLS on the agent listener and the API, with a self-signed certificate made
in the test: config validation, in-daemon agents over wss://, the API over
https://, and a paired agent pinning the certificate's fingerprint."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request

import pytest
from conftest import make_config, running, timeout, wait_until
from ops_util import RawAgent, cli, self_signed, write_config

from bridge import config as config_module
from bridge.config import ConfigError
from bridge.ops import client
from bridge.ops.tls import client_context, fingerprint
from device_agents import pairing
from device_agents import protocol as p


def test_tls_keys_are_checked(tmp_path):
    cert, key = self_signed(tmp_path)
    other_cert, _ = self_signed(tmp_path, "other")
    with pytest.raises(ConfigError, match=r"agents\.tls_key: required when agents\.tls_cert is set"):
        make_config(tmp_path, agents={"tls_cert": str(cert)})
    with pytest.raises(ConfigError, match=r"api\.tls_cert: no such file"):
        make_config(tmp_path, api={"tls_cert": str(tmp_path / "nope.crt"), "tls_key": str(key)})
    with pytest.raises(ConfigError, match=r"agents\.tls_cert: certificate and key do not load together"):
        make_config(tmp_path, agents={"tls_cert": str(other_cert), "tls_key": str(key)})
    with pytest.raises(ConfigError, match=r"agents\.tls_cert: certificate and key do not load together"):
        make_config(tmp_path, agents={"tls_cert": str(key), "tls_key": str(key)})
    config = make_config(tmp_path, agents={"tls_cert": str(cert), "tls_key": str(key)})
    assert config.agents.tls_cert == cert


def test_relative_tls_paths_are_read_from_the_config_folder(tmp_path):
    self_signed(tmp_path)
    path, _, _ = write_config(tmp_path, agents_extra='tls_cert = "agents.crt"\ntls_key = "agents.key"')
    config = config_module.load(path)
    assert config.agents.tls_cert == tmp_path / "agents.crt"


async def test_agents_and_api_over_tls(tmp_path):
    cert, key = self_signed(tmp_path)
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"'
    path, api, agents = write_config(tmp_path, api_extra=tls, agents_extra=tls)
    text = path.read_text() + """
[[devices]]
id = "phone-1"
kind = "virtual"
account = "user@email.com"
standalone = true
"""
    path.write_text(text)
    config = config_module.load(path)
    assert config.api.public_url.startswith("https://")
    async with running(config) as daemon:
        assert daemon.agent_url().startswith("wss://")
        # The in-daemon virtual phone came in over wss://.
        await wait_until(lambda: "sim-1" in daemon.dispatcher.sessions, what="sim-1 online over TLS")

        # The API speaks HTTPS (and the CLI follows the configuration).
        def get() -> bytes:
            with urllib.request.urlopen(f"https://127.0.0.1:{api}/healthz", timeout=timeout(10),
                                        context=client_context(cert)) as resp:
                return resp.read()
        assert b"ok" in await asyncio.to_thread(get)
        assert client.api_base(config).startswith("https://")
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(urllib.request.urlopen, f"https://127.0.0.1:{api}/healthz",
                                    timeout=timeout(10))  # the system CAs do not know a self-signed cert
        code, out, err = await cli("devices", "--config", str(path), "--json")
        assert code == 0, err
        assert '"sim-1"' in out

        # Pairing over TLS: the URI pins the certificate.
        code, out, err = await cli("pair", "--config", str(path), "--device", "phone-1", "--no-qr")
        assert code == 0, err
        info = pairing.parse_uri(re.search(r"simbridge://pair\S+", out).group(0))
        assert info.url == f"wss://127.0.0.1:{agents}" and info.fingerprint == fingerprint(cert)
        agent = RawAgent(info.url, info.device_id, info.token, ssl=pairing.client_ssl_context(info))
        await agent.connect()
        pairing.check_pin(agent.ws.transport, info)
        assert isinstance(await agent.hello(), p.Welcome)
        await agent.close()

        # Another certificate than the paired one is refused before anything is sent.
        wrong = pairing.PairingInfo(url=info.url, device_id=info.device_id, token=info.token,
                                    fingerprint="00" * 32)
        agent = RawAgent(wrong.url, wrong.device_id, wrong.token, ssl=pairing.client_ssl_context(wrong))
        await agent.connect()
        with pytest.raises(pairing.PairingError, match="not the paired one"):
            pairing.check_pin(agent.ws.transport, wrong)
        await agent.close()
