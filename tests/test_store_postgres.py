"""What is PostgreSQL's own in the store: migrations under an advisory lock
(daemons starting together), refusing a newer schema, notifications between
stores on one database, and a whole daemon on it. (What every backend
promises is in tests/store_contract/.)"""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest
from conftest import api_url, make_config, running, timeout, wait_until
from pg_util import new_schema, pg_database  # noqa: F401 - the session's database fixture

from bridge.core import events
from bridge.store.model import NewJob
from bridge.store.postgres import PostgresStore
from bridge.store.schema import SCHEMA_VERSION


class Everything:
    def wants(self, account: str, kind: str) -> bool:
        return kind in events.ALL_KINDS


@pytest.fixture
async def url(pg_database):  # noqa: F811 - the fixture imported above
    return await new_schema(pg_database)


async def test_stores_opening_together_migrate_once(url):
    stores = [PostgresStore(url, event_filter=Everything(), pool_size=2) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(url)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        finally:
            await conn.close()
        assert versions == list(range(1, SCHEMA_VERSION + 1))  # each migration once
        [e] = await stores[0].enqueue("a", [NewJob(kind="sms", phone_number="+33612345678", message="hi")])
        assert (await stores[3].get_job("a", e.job.id_sms_api)) == e.job
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_newer_schema_is_refused(url):
    s = PostgresStore(url, event_filter=Everything())
    await s.open()
    await s.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION + 5)
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match="newer than this simbridge knows"):
        await PostgresStore(url, event_filter=Everything()).open()


async def test_another_store_hears_new_work_and_new_events(url):
    """Two daemons on one database: the other one is woken by NOTIFY, not by polling."""
    here, there = (PostgresStore(url, event_filter=Everything(), pool_size=2) for _ in range(2))
    await here.open()
    await there.open()
    try:
        queues: list[str] = []
        outbox = asyncio.Event()
        woken = asyncio.Event()

        def queue(account: str) -> None:
            queues.append(account)
            woken.set()
        there.set_queue_listener(queue)
        there.set_outbox_listener(outbox.set)
        await wait_until(lambda: there._listen_conn is not None, what="the listening connection")
        await here.enqueue("acct", [NewJob(kind="sms", phone_number="+33612345678", message="hi")])
        await asyncio.wait_for(woken.wait(), timeout(5))
        await asyncio.wait_for(outbox.wait(), timeout(5))
        assert queues == ["acct"]
    finally:
        await here.close()
        await there.close()


async def test_a_daemon_on_postgresql_sends_and_reports(tmp_path, url):
    config = make_config(tmp_path, store={"url": url})
    async with running(config) as daemon, aiohttp.ClientSession() as http:
        assert isinstance(daemon.store, PostgresStore)
        async with http.post(api_url(daemon, "/api/v1/sendsms"), json={
                "header": {"login": "user@email.com", "accessKey": "your-access-key"},
                "messages": [{"phone_number": "+33612345678", "message": "over PostgreSQL"}]}) as resp:
            [answer] = await resp.json()
        key = answer["id_sms_api"]

        async def status() -> str | None:
            async with http.get(api_url(daemon, f"/api/v1/sms/{key}"),
                                headers={"Authorization": "Bearer your-access-key"}) as r:
                return (await r.json())["data"]["status"] if r.status == 200 else None
        await wait_until(lambda: _equals(status(), "delivered"), what="delivered")


async def _equals(coro, expected) -> bool:
    return (await coro) == expected
