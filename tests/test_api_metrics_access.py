"""/metrics names every login and device: loopback only, or a bearer token."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from conftest import make_config

from bridge.api.auth import Auth
from bridge.api.ops import Ops
from bridge.api.settings import Settings


class Page:
    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(text="simbridge_up 1\n")


class Peer:
    """A transport stub: what the socket says of the client."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.address, 40000) if name == "peername" else default


def ops(tmp_path, **api: Any) -> Ops:
    config = make_config(tmp_path, api=api)
    settings = Settings(config)
    return Ops(settings=settings, auth=Auth(settings), daemon=None, metrics=Page())


def request(address: str, **headers: str) -> web.Request:
    return make_mocked_request("GET", "/metrics", headers=headers, transport=Peer(address))


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.53", "::1"])
async def test_loopback_clients_read_the_metrics_without_a_token(tmp_path, address):
    response = await ops(tmp_path).metrics(request(address))
    assert response.text == "simbridge_up 1\n"


async def test_other_hosts_are_refused_without_a_token(tmp_path):
    with pytest.raises(web.HTTPForbidden) as refused:
        await ops(tmp_path).metrics(request("192.0.2.10"))
    assert "metrics_token" in refused.value.text


async def test_with_a_token_everyone_must_present_it(tmp_path):
    guarded = ops(tmp_path, metrics_token="s3cret-scraper")
    for address in ("127.0.0.1", "192.0.2.10"):
        with pytest.raises(web.HTTPUnauthorized):
            await guarded.metrics(request(address))
        with pytest.raises(web.HTTPUnauthorized):
            await guarded.metrics(request(address, Authorization="Bearer wrong"))
        ok = await guarded.metrics(request(address, Authorization="Bearer s3cret-scraper"))
        assert ok.text == "simbridge_up 1\n"


async def test_the_running_daemon_answers_401_and_403_as_such(tmp_path):
    import aiohttp
    from conftest import api_url, running

    async with running(make_config(tmp_path, api={"metrics_token": "s3cret-scraper"})) as daemon, \
            aiohttp.ClientSession() as http:
        async with http.get(api_url(daemon, "/metrics")) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(api_url(daemon, "/metrics"),
                            headers={"Authorization": "Bearer s3cret-scraper"}) as resp:
            assert resp.status == 200 and "simbridge" in await resp.text()
