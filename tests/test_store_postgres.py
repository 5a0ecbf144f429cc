"""What is PostgreSQL's own in the store: migrations under an advisory lock
(daemons starting together), refusing a newer schema, notifications between
stores on one database, and a whole daemon on it. (What every backend
promises is in tests/store_contract/.)"""

from __future__ import annotations

import asyncio
import os
import secrets

import aiohttp
import asyncpg
import pg_util
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
                return (await r.json())["data"]["state"] if r.status == 200 else None
        await wait_until(lambda: _equals(status(), "delivered"), what="delivered")


async def _equals(coro, expected) -> bool:
    return (await coro) == expected


async def test_a_database_out_of_reach_is_a_503_and_the_daemon_recovers(tmp_path):
    """The database refuses connections and ours are terminated: accepting
    stops with 503 + Retry-After; when it is back, the daemon carries on and
    what it had accepted is delivered."""
    why = pg_util.reachable()
    if why is not None:
        pytest.skip(why)
    name = f"simbridge_test_{os.getpid()}_{secrets.token_hex(4)}"
    pg_util._admin(f'CREATE DATABASE "{name}"')
    url = pg_util.with_database(pg_util.SERVER, name)
    try:
        config = make_config(tmp_path, store={"url": url})
        async with running(config) as daemon, aiohttp.ClientSession() as http:
            body = {"header": {"login": "user@email.com", "accessKey": "your-access-key"},
                    "messages": [{"phone_number": "+33612345678", "message": "before", "id_sms_api": "before"}]}
            async with http.post(api_url(daemon, "/api/v1/sendsms"), json=body) as resp:
                assert resp.status == 200
            await wait_until(lambda: _equals(_status(http, daemon, "before"), "delivered"), what="delivered")

            pg_util._admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            pg_util._admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
            during = {**body, "messages": [{"phone_number": "+33612345678", "message": "during",
                                            "id_sms_api": "during"}]}

            async def refused() -> bool:
                async with http.post(api_url(daemon, "/api/v1/sendsms"), json=during) as resp:
                    if resp.status != 503:
                        return False
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert "unavailable" in (await resp.json())["message"]
                    return True
            await wait_until(refused, what="503 while the database is away")

            pg_util._admin(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')

            async def accepted() -> bool:
                async with http.post(api_url(daemon, "/api/v1/sendsms"), json=during) as resp:
                    return resp.status == 200
            await wait_until(accepted, within=30, what="accepting again")
            await wait_until(lambda: _equals(_status(http, daemon, "during"), "delivered"), within=30,
                             what="the message accepted after the outage delivered")
            assert await _status(http, daemon, "before") == "delivered"
    finally:
        pg_util._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _status(http: aiohttp.ClientSession, daemon, key: str) -> str | None:
    async with http.get(api_url(daemon, f"/api/v1/sms/{key}"),
                        headers={"Authorization": "Bearer your-access-key"}) as r:
        return (await r.json())["data"]["state"] if r.status == 200 else None


class Nothing:
    def wants(self, account: str, kind: str) -> bool:
        return False


@pytest.mark.parametrize("event_filter", [Everything(), Nothing()], ids=["in-a-transaction", "one-statement"])
async def test_a_generated_key_meeting_a_taken_one_is_stored_under_another(url, event_filter, monkeypatch):
    """A generated id_sms_api that another job already has (astronomically rare, forced here): the
    message is stored under a new key, the other job is left alone, and nothing is refused — also when
    the enqueue is one statement committed on its own (no webhook event wanted)."""
    from bridge.store import shaping  # where the batch's keys are generated
    store = PostgresStore(url, event_filter=event_filter, pool_size=2)
    await store.open()
    try:
        [first] = await store.enqueue("a", [NewJob(kind="sms", phone_number="+33612345678", message="first")])
        real = shaping.new_id_sms_apis
        calls = []

        def colliding(count: int) -> list[str]:
            calls.append(count)
            return [first.job.id_sms_api, *real(count - 1)] if len(calls) == 1 else real(count)
        monkeypatch.setattr(shaping, "new_id_sms_apis", colliding)
        out = await store.enqueue("a", [NewJob(kind="sms", phone_number="+33698765432", message="second"),
                                        NewJob(kind="sms", phone_number="+33611111111", message="third")])
        assert [e.created for e in out] == [True, True]
        assert out[0].job.id_sms_api != first.job.id_sms_api and out[0].job.message == "second"
        for e in out:
            assert await store.get_job("a", e.job.id_sms_api) == e.job
        assert (await store.get_job("a", first.job.id_sms_api)).message == "first"
        assert len(await store.history(out[0].job.id)) == 1
        assert (await store.counts())[("queued", 1)] == 3
    finally:
        await store.close()


async def test_an_enqueue_with_no_event_wanted_wakes_other_daemons(url):
    """The one-statement enqueue (no event to write) still NOTIFYs the other daemons, at its commit."""
    here, there = (PostgresStore(url, event_filter=Nothing(), pool_size=2) for _ in range(2))
    await here.open()
    await there.open()
    try:
        woken = asyncio.Event()
        there.set_queue_listener(lambda account: woken.set())
        await wait_until(lambda: there._listen_conn is not None, what="the listening connection")
        [e] = await here.enqueue("acct", [NewJob(kind="sms", phone_number="+33612345678", message="hi")])
        await asyncio.wait_for(woken.wait(), timeout(5))
        assert (await there.get_job("acct", e.job.id_sms_api)) == e.job
    finally:
        await here.close()
        await there.close()


async def test_counters_are_folded_only_when_some_were_written(url):
    """An idle cluster's upkeep writes nothing: the fold looks first, and takes its
    lock only when a name has more than one row (deltas written by any daemon)."""
    here, there = (PostgresStore(url, event_filter=Everything(), pool_size=2) for _ in range(2))
    await here.open()
    await there.open()
    conn = await asyncpg.connect(url)
    try:
        async def rows() -> list[tuple[str, int]]:
            return [tuple(r) for r in await conn.fetch("SELECT name, n FROM counters ORDER BY name, n")]

        async def last_change() -> int:  # the counters table's last writing transaction
            return await conn.fetchval("SELECT MAX(xmin::text::bigint) FROM counters")
        await here.enqueue("acct", [NewJob(kind="sms", phone_number="+33612345678", message="hi")])
        await there.enqueue("acct", [NewJob(kind="sms", phone_number="+33612345679", message="hi")])
        await here.fold_counters()  # folds what both wrote
        folded = await rows()
        assert len({name for name, _ in folded}) == len(folded) and ("jobs:queued:1", 2) in folded, folded
        mark = await last_change()
        await here.fold_counters()
        await there.fold_counters()
        assert await last_change() == mark and await rows() == folded  # nothing rewritten
    finally:
        await conn.close()
        await here.close()
        await there.close()


async def test_a_first_line_of_history_stored_before_is_not_doubled(url):
    """Stores written before a job's first line was left to its ``created`` have it stored."""
    store = PostgresStore(url, event_filter=Everything(), pool_size=2)
    await store.open()
    try:
        [e] = await store.enqueue("a", [NewJob(kind="sms", phone_number="+33612345678", message="hi")])
        assert [h["state"] for h in await store.history(e.job.id)] == ["queued"]
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO job_history (job_id, state, at) VALUES ($1, 'queued', $2)",
                               e.job.id, e.job.created)
        finally:
            await conn.close()
        assert await store.history(e.job.id) == [{"state": "queued", "at": e.job.created, "device_id": None,
                                                  "reason": None}]
    finally:
        await store.close()
