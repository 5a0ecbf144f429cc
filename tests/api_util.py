"""Helpers of the API tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from conftest import api_url, running, wait_until

from bridge import config as config_module
from bridge.daemon import Daemon


@contextlib.asynccontextmanager
async def serving(config: config_module.Config) -> AsyncIterator[Daemon]:
    """``running(config)``, once every virtual phone of the config is connected
    (a daemon stopped while its phones are still saying hello is another test)."""
    async with running(config) as daemon:
        wanted = {d.id for d in config.devices}
        await wait_until(lambda: wanted <= set(daemon.dispatcher.sessions), what="phones online")
        yield daemon


BEARER = {"Authorization": "Bearer your-access-key"}
HEADER = {"login": "user@email.com", "accessKey": "your-access-key"}


def radio(daemon, device="sim-1"):
    """What the virtual phone transmitted, from its radio log."""
    path = daemon.config.data_dir / f"virtual-{device}-radio.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def get(http, daemon, path, headers=BEARER, **params):
    async with http.get(api_url(daemon, path), headers=headers, params=params) as resp:
        return resp.status, await resp.json()


async def post(http, daemon, path, *, json_body=None, form=None, headers=BEARER):
    async with http.post(api_url(daemon, path), json=json_body, data=form, headers=headers) as resp:
        return resp.status, await resp.json()
