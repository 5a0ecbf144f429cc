"""The SQLite store on its own: schema, order, idempotency, the state table."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from bridge.core import jobstates as js
from bridge.store.sqlite import MIGRATIONS, NewJob, SqliteStore
from device_agents import protocol as p


@pytest.fixture
async def store(tmp_path):
    s = SqliteStore(tmp_path / "s.db", synchronous="normal")
    await s.open()
    yield s
    await s.close()


def sms(**kw) -> NewJob:
    return NewJob(kind="sms", phone_number=kw.pop("to", "+33612345678"), message=kw.pop("text", "hi"), **kw)


async def test_schema_is_versioned_and_wal(tmp_path, store):
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_reopening_keeps_everything_and_runs_no_migration_twice(tmp_path):
    s = SqliteStore(tmp_path / "s.db")
    await s.open()
    await s.enqueue("a", [sms(id_sms_api="x")])
    await s.close()
    s = SqliteStore(tmp_path / "s.db")
    await s.open()
    assert (await s.get_job("a", "x")).state == "queued"
    await s.close()


async def test_a_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    s = SqliteStore(tmp_path / "s.db")
    with pytest.raises(RuntimeError, match="newer than this simbridge knows"):
        await s.open()


async def test_idempotency_key_is_per_account(store):
    [first] = await store.enqueue("a", [sms(id_sms_api="k1", text="one")])
    [again, other] = await store.enqueue("a", [sms(id_sms_api="k1", text="two"), sms(id_sms_api="k2")])
    [elsewhere] = await store.enqueue("b", [sms(id_sms_api="k1")])
    assert first.created and not again.created and other.created and elsewhere.created
    assert again.job.id == first.job.id and again.job.message == "one"
    assert elsewhere.job.id != first.job.id


async def test_claim_order_and_due_dates(store):
    now = time.time()
    await store.enqueue("a", [sms(id_sms_api="low", priority=0), sms(id_sms_api="future", priority=2, due=now + 3600),
                              sms(id_sms_api="high", priority=2), sms(id_sms_api="normal"),
                              sms(id_sms_api="high-older", priority=2, due=now - 60)])
    jobs = await store.claim("a", "d1", 10)
    assert [j.id_sms_api for j in jobs] == ["high-older", "high", "normal", "low"]
    assert all(j.state == "queued" for j in jobs)  # the rows as they were claimed
    assert (await store.get_job("a", "high")).state == "dispatched"
    assert await store.claim("a", "d1", 10) == []  # the future one waits
    assert await store.claim("b", "d1", 10) == []  # other accounts' jobs are not ours


async def test_concurrent_claims_never_share_a_job(store):
    await store.enqueue("a", [sms(id_sms_api=str(i)) for i in range(100)])
    results = await asyncio.gather(*(store.claim("a", f"d{i}", 7) for i in range(20)))
    ids = [j.id for jobs in results for j in jobs]
    assert len(ids) == len(set(ids)) == 100


async def test_events_move_jobs_through_the_table_with_history(store):
    [e] = await store.enqueue("a", [sms()])
    [job] = await store.claim("a", "d1", 1)
    out = await store.apply_events("d1", "a", [
        p.JobState(event_id="1", job_id=job.job_id, state="accepted", at=1.0),
        p.JobState(event_id="2", job_id=job.job_id, state="delivered", at=2.0)])  # sent was skipped
    assert out.acked == ["1", "2"] and out.finished == 1
    history = await store.history(job.id)
    assert [h["state"] for h in history] == ["queued", "dispatched", "sent", "delivered"]
    # A final job takes nothing more.
    await store.apply_events("d1", "a", [p.JobState(event_id="3", job_id=job.job_id, state="failed", at=3.0)])
    assert (await store.get_job("a", e.job.id_sms_api)).state == "delivered"


def test_the_state_table():
    assert js.next_state("queued", "dispatch") == "dispatched"
    assert js.path("dispatched", "delivered") == ["sent", "delivered"]
    with pytest.raises(js.InvalidTransition):
        js.next_state("delivered", "requeue")
    with pytest.raises(js.InvalidTransition):
        js.path("sent", "queued")
    for state in js.FINAL_STATES:
        assert js.TRANSITIONS[state] == {}


async def test_a_failing_write_does_not_spoil_the_others_in_its_group(store):
    async def bad():
        def boom(db):
            db.execute("INSERT INTO jobs (id) VALUES (NULL)")  # violates NOT NULL
        return await store._run(store._tx(boom))
    results = await asyncio.gather(store.enqueue("a", [sms(id_sms_api="ok1")]), bad(),
                                   store.enqueue("a", [sms(id_sms_api="ok2")]), return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await store.get_job("a", "ok1") and await store.get_job("a", "ok2")


async def test_expiry_and_requeue(store):
    [e] = await store.enqueue("a", [sms(ttl_s=0.01)])
    await asyncio.sleep(0.05)
    assert await store.expire() == 1
    job = await store.get_job("a", e.job.id_sms_api)
    assert job.state == "expired" and "ttl" in job.reason
    await store.enqueue("a", [sms(id_sms_api="r")])
    [job] = await store.claim("a", "d1", 1)
    assert await store.requeue_device("d1", time.time() + 1, reason="gone", max_attempts=1) == 1
    job = await store.get_job("a", "r")
    assert job.state == "failed" and "gave up after 1 attempts" in job.reason
