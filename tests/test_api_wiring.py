"""The API built from its parts: collaborators come in through the
constructor (a DaemonView, a metrics page, the store's protocols), and
nothing else reaches it. Served on a real loopback socket."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import make_config

from bridge.api.app import Api
from bridge.config import AccountConfig, Config
from bridge.store.sqlite import SqliteStore
from bridge.webhooks.policy import WebhookPolicy

KEY = {"Authorization": "Bearer your-access-key"}
OTHER = {"login": "other@email.com", "access_key": "other-key"}


class RecordingDaemon:
    """A DaemonView that answers from fixed data and records what it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []
        self.online: set[str] = set()

    def devices_view(self, account: AccountConfig | None) -> list[dict[str, Any]]:
        self.asked.append(("devices", account.login if account else None))
        return [{"id": "sim-1", "account": account.login if account else None, "state": "online"}]

    def phones_online(self, login: str) -> bool:
        self.asked.append(("online", login))
        return login in self.online

    async def simulate(self, account: AccountConfig, what: str, body: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(("simulate", account.login, what, body))
        if what != "incoming-sms":
            raise LookupError(f"nothing to simulate called {what!r}")
        return {"device": "sim-1", "event_id": 1, "kind": "sms_received"}

    async def recheck(self, device_id: str) -> bool:
        self.asked.append(("recheck", device_id))
        return True

    async def store_fault(self) -> str | None:
        return None


class Page:
    """A MetricsSource."""

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(text="simbridge_up 1\n", content_type="text/plain")


@contextlib.asynccontextmanager
async def served(config: Config, **parts: Any) -> AsyncIterator[tuple[Api, aiohttp.ClientSession, str]]:
    store = SqliteStore(config.store.path, event_filter=WebhookPolicy(config), synchronous=config.store.synchronous)
    await store.open()
    api = Api(config=config, jobs=store, records=store, codes=store, on_enqueued=lambda: None, **parts)
    server = TestServer(api.app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield api, http, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
        await store.close()


async def test_without_a_daemon_the_ops_routes_say_so(tmp_path):
    async with served(make_config(tmp_path)) as (_, http, base):
        async with http.get(f"{base}/api/v1/devices", headers=KEY) as resp:
            assert resp.status == 200 and (await resp.json())["data"] == []
        async with http.post(f"{base}/api/v1/simulate/incoming-sms", json={"from": "+33612345678"},
                             headers=KEY) as resp:
            assert resp.status == 404 and "no virtual devices" in (await resp.json())["message"]
        async with http.post(f"{base}/api/v1/devices/sim-1/recheck", headers=KEY) as resp:
            assert resp.status == 404
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 404
        call = {"header": {"login": "user@email.com", "accessKey": "your-access-key",
                           "phone_number": "+33612345678"}}
        async with http.post(f"{base}/api/v1/clicTocall", json=call) as resp:
            assert (await resp.json())[0]["errors"] == ["#002"]  # no phone can place it


async def test_the_daemon_view_answers_the_ops_routes(tmp_path):
    daemon = RecordingDaemon()
    async with served(make_config(tmp_path), daemon=daemon, metrics=Page()) as (_, http, base):
        async with http.get(f"{base}/api/v1/devices", headers=KEY) as resp:
            assert (await resp.json())["data"][0]["account"] == "user@email.com"
        body = {"from": "+33612345678", "text": "hello"}
        async with http.post(f"{base}/api/v1/simulate/incoming-sms", json=body, headers=KEY) as resp:
            assert resp.status == 200 and (await resp.json())["data"]["kind"] == "sms_received"
        async with http.post(f"{base}/api/v1/simulate/fax", json=body, headers=KEY) as resp:
            assert resp.status == 400 and "fax" in (await resp.json())["message"]
        async with http.post(f"{base}/api/v1/simulate/incoming-sms", json={**body, "from": "1" * 33},
                             headers=KEY) as resp:
            assert resp.status == 400  # refused before the daemon is asked
        async with http.post(f"{base}/api/v1/devices/sim-1/recheck",
                             headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 404
        async with http.post(f"{base}/api/v1/devices/sim-1/recheck", headers=KEY) as resp:
            assert (await resp.json())["data"] == {"device": "sim-1", "closed": True}
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200 and "simbridge_up 1" in await resp.text()
        call = {"header": {"login": "user@email.com", "accessKey": "your-access-key",
                           "phone_number": "+33612345678"}}
        daemon.online.add("user@email.com")
        async with http.post(f"{base}/api/v1/clicTocall", json=call) as resp:
            answer = (await resp.json())[0]
            assert answer["result"] == "success" and answer["id_sms_api"]
    assert daemon.asked == [
        ("devices", "user@email.com"),
        ("simulate", "user@email.com", "incoming-sms", body),
        ("simulate", "user@email.com", "fax", body),
        ("recheck", "sim-1"),
        ("online", "user@email.com"),
    ]


async def test_a_reload_reaches_every_room(tmp_path):
    config = make_config(tmp_path)
    async with served(config) as (api, http, base):
        other = {"Authorization": f"Bearer {OTHER['access_key']}"}
        async with http.get(f"{base}/api/v1/sms", headers=other) as resp:
            assert resp.status == 401
        reloaded = make_config(tmp_path, accounts=[{"login": "user@email.com", "access_key": "your-access-key"},
                                                   OTHER], api={"forbidden_words": ["casino"]})
        api.reload(dataclasses.replace(reloaded, store=config.store))
        async with http.get(f"{base}/api/v1/sms", headers=other) as resp:
            assert resp.status == 200
        batch = {"header": {"login": "other@email.com", "accessKey": "other-key"},
                 "messages": [{"phone_number": "+33612345678", "message": "casino"}]}
        async with http.post(f"{base}/api/v1/sendsms", json=batch) as resp:
            assert (await resp.json())[0]["error"] == ["#004"]
