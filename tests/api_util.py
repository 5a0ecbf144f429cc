"""Helpers of the API tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from conftest import running, wait_until

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
