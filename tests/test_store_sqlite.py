"""What is SQLite's own in the store: the schema version, WAL, refusing a
newer schema, group commit, and each concern's class working alone on the
same database. (What every backend promises is in tests/store_contract/.)"""

from __future__ import annotations

import asyncio
import collections
import sqlite3

import pytest

from bridge.core import events
from bridge.store.model import NewJob
from bridge.store.schema import MIGRATIONS, SCHEMA_VERSION
from bridge.store.sqlite import SqliteDeviceAuth, SqliteJobQueue, SqliteOutbox, SqliteStore


class Sends:
    """An event filter: every event (``every``), or none."""
    def __init__(self, every: bool = True) -> None:
        self.every = every

    def wants(self, account: str, kind: str) -> bool:
        return self.every


async def opened(path, every: bool) -> SqliteStore:
    s = SqliteStore(path, event_filter=Sends(every), synchronous="normal")
    await s.open()
    return s


@pytest.fixture
async def store(tmp_path):
    s = await opened(tmp_path / "s.db", True)
    yield s
    await s.close()


def sms(**kw) -> NewJob:
    return NewJob(kind="sms", phone_number="+33612345678", message="hi", **kw)


async def test_schema_is_versioned_and_wal(tmp_path, store):
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_an_older_schema_is_migrated_in_place(tmp_path):
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    db.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    db.execute("INSERT INTO jobs (account, id_sms_api, kind, phone_number, priority, due, expires, state, created, "
               "updated) VALUES ('a', 'old', 'sms', '+33612345678', 1, 0, 1e12, 'queued', 0, 0)")
    db.close()
    s = SqliteStore(tmp_path / "s.db", event_filter=Sends())
    await s.open()
    try:
        assert (await s.get_job("a", "old")).state == "queued"
        assert await s.device_auth("x") == (frozenset(), 0)  # a table of a later migration
    finally:
        await s.close()


async def test_a_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    s = SqliteStore(tmp_path / "s.db", event_filter=Sends())
    with pytest.raises(RuntimeError, match="newer than this simbridge knows"):
        await s.open()
    await s.close()


async def test_a_closed_store_says_so(tmp_path):
    s = SqliteStore(tmp_path / "s.db", event_filter=Sends())
    with pytest.raises(RuntimeError, match="not open"):
        await s.enqueue("a", [sms()])
    await s.close()


async def test_a_failing_write_does_not_spoil_the_others_in_its_group(store):
    async def bad():
        def boom(db):
            db.execute("INSERT INTO jobs (id) VALUES (NULL)")  # violates NOT NULL
        return await store._run(store._tx(boom))
    results = await asyncio.gather(store.enqueue("a", [sms(id_sms_api="ok1")]), bad(),
                                   store.enqueue("a", [sms(id_sms_api="ok2")]), return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await store.get_job("a", "ok1") and await store.get_job("a", "ok2")


async def test_each_concern_works_alone_on_the_same_database(tmp_path, store):
    """A second backend can be written one door at a time: here each SQLite
    class stands alone beside the composed store (as ``simbridge pair`` does)."""
    path = tmp_path / "s.db"
    jobs = SqliteJobQueue(path, event_filter=Sends())
    outbox = SqliteOutbox(path, event_filter=Sends())
    tokens = SqliteDeviceAuth(path, event_filter=Sends())
    for part in (jobs, outbox, tokens):
        await part.open()
    try:
        [e] = await jobs.enqueue("a", [sms(id_sms_api="alone")])
        assert (await store.get_job("a", "alone")) == e.job
        [row] = await outbox.claim_outbox(["a"], 10, lease_s=30)
        assert row.kind == events.SMS_QUEUED and row.order_key == "alone"
        await tokens.add_device_token("phone-1", "a" * 64)
        assert await store.device_auth("phone-1") == (frozenset({"a" * 64}), 0)
    finally:
        for part in (jobs, outbox, tokens):
            await part.close()


async def test_an_urgent_write_is_committed_ahead_of_those_waiting_with_it(store, tmp_path):
    """Writes that wait while the store thread is busy share one transaction, but a priority-2
    message is committed first, in its own: while the others' writes run it is already on disk,
    visible to another connection (and its caller answered without waiting for theirs)."""
    import threading
    gate = threading.Event()
    blocked = asyncio.ensure_future(store._run(gate.wait))  # the store thread, busy
    seen_by_others: list[int] = []

    def other_write(db, marker):
        with sqlite3.connect(store.path) as other:
            seen_by_others.append(other.execute("SELECT COUNT(*) FROM jobs WHERE priority = 2").fetchone()[0])
        db.execute("INSERT INTO counters (name, n) VALUES (?, 1)", (marker,))

    waiting = [asyncio.ensure_future(store._run(store._tx(other_write), f"w{i}")) for i in range(3)]
    normal = asyncio.ensure_future(store.enqueue("a", [sms(id_sms_api="campaign", priority=0)]))
    urgent = asyncio.ensure_future(store.enqueue("a", [sms(id_sms_api="code", priority=2)]))
    await asyncio.sleep(0)  # every write queued behind the busy thread
    gate.set()
    await asyncio.gather(blocked, normal, urgent, *waiting)
    assert seen_by_others == [1, 1, 1]
    assert (await store.get_job("a", "code")).priority == 2 and await store.get_job("a", "campaign")


async def test_the_claim_after_urgent_work_came_is_urgent_too(store):
    """The first claim of an account after a priority-2 message came is committed ahead of the writes
    waiting with it (it is the one that takes the message to a phone); the next one is not."""
    import threading
    [code] = await store.enqueue("a", [sms(id_sms_api="code", priority=2)])
    await store.enqueue("a", [sms(id_sms_api=f"c{i}", priority=0) for i in range(3)])

    async def claim_beside_others() -> list[int]:
        gate = threading.Event()
        blocked = asyncio.ensure_future(store._run(gate.wait))
        seen: list[int] = []

        def other_write(db):
            with sqlite3.connect(store.path) as other:
                seen.append(other.execute("SELECT COUNT(*) FROM jobs WHERE state = 'dispatched'").fetchone()[0])
            db.execute("INSERT INTO counters (name, n) VALUES ('x', 1)")

        waiting = asyncio.ensure_future(store._run(store._tx(other_write)))
        claim = asyncio.ensure_future(store.claim("a", "phone-1", 1))
        await asyncio.sleep(0)  # both queued behind the busy thread
        gate.set()
        await asyncio.gather(blocked, waiting)
        [job] = await claim
        return [job.priority, *seen]

    assert await claim_beside_others() == [2, 1]  # the code's claim was on disk before the other write ran
    assert await claim_beside_others() == [0, 1]  # committed with the other write, after it ran


async def test_counters_are_folded_after_writes_only(store, tmp_path):
    """An idle daemon's upkeep commits nothing: no transaction (nor fsync) every few seconds."""
    other = sqlite3.connect(tmp_path / "s.db")

    def version() -> int:  # changes when another connection commits
        return other.execute("PRAGMA data_version").fetchone()[0]
    await store.enqueue("a", [sms(), sms(priority=2)])
    before = version()
    await store.fold_counters()
    assert version() != before  # the enqueue's deltas folded: one row a name
    rows = other.execute("SELECT name, COUNT(*) FROM counters GROUP BY name").fetchall()
    assert rows and all(n == 1 for _, n in rows), rows
    folded = version()
    for _ in range(3):
        await store.fold_counters()
    assert version() == folded  # nothing written since: no commit
    await store.enqueue("a", [sms()])
    await store.fold_counters()
    assert version() != folded
    assert sum((await store.counts()).values()) == 3  # folded or not, the counts hold
    other.close()


async def test_a_group_being_written_yields_to_an_urgent_write_that_arrives(store):
    """A priority-2 message that arrives while a long group is being written does not
    wait for the rest of it: what has run is committed, the message goes next, then the rest."""
    import threading
    busy, gate, started = threading.Event(), threading.Event(), threading.Event()
    blocked = asyncio.ensure_future(store._run(busy.wait))  # so the group below is taken in one go
    seen_by_others: list[int] = []

    def first(db):
        started.set()
        gate.wait()
        db.execute("INSERT INTO counters (name, n) VALUES ('first', 1)")

    def later(db, marker):
        with sqlite3.connect(store.path) as other:
            seen_by_others.append(other.execute("SELECT COUNT(*) FROM jobs WHERE priority = 2").fetchone()[0])
        db.execute("INSERT INTO counters (name, n) VALUES (?, 1)", (marker,))

    group = [asyncio.ensure_future(store._run(store._tx(first)))]
    group += [asyncio.ensure_future(store._run(store._tx(later), f"w{i}")) for i in range(3)]
    await asyncio.sleep(0)  # all four queued behind the busy thread
    busy.set()
    await asyncio.get_running_loop().run_in_executor(None, started.wait)  # the group is being written
    urgent = asyncio.ensure_future(store.enqueue("a", [sms(id_sms_api="code", priority=2)]))
    await asyncio.sleep(0)  # it is queued
    gate.set()
    await asyncio.gather(blocked, urgent, *group)
    assert seen_by_others == [1, 1, 1]  # the rest of the group ran after the code was committed
    names = {r[0] for r in await store._run(lambda: store._conn.execute("SELECT name FROM counters").fetchall())}
    assert {"first", "w0", "w1", "w2"} <= names  # and nothing of the group was lost


async def test_hot_path_reads_do_not_wait_for_the_writer(store):
    """An accept's opt-out check and the lookups run on a read-only connection of their own:
    they answer from the last commit while the writer is busy, and cannot write."""
    import threading
    [job] = await store.enqueue("a", [sms(id_sms_api="m1")])
    gate = threading.Event()
    busy = asyncio.ensure_future(store._run(gate.wait))  # the store thread, held
    pending = asyncio.ensure_future(store.enqueue("a", [sms(id_sms_api="m2")]))
    try:
        await asyncio.sleep(0)
        assert await asyncio.wait_for(store.opted_out("a", ["+33612345678"]), 5) == set()
        assert (await asyncio.wait_for(store.get_job("a", "m1"), 5)).id == job.job.id
        assert await asyncio.wait_for(store.get_job("a", "m2"), 5) is None  # not committed yet
        assert not busy.done() and not pending.done()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await store._read(lambda: store._conn.execute("DELETE FROM jobs"))
    finally:
        gate.set()
    await asyncio.gather(busy, pending)
    assert (await store.get_job("a", "m2")).id_sms_api == "m2"


async def test_a_first_line_of_history_stored_before_is_not_doubled(store, tmp_path):
    """Stores written before a job's first line was left to its ``created`` have it stored."""
    [e] = await store.enqueue("a", [sms()])
    db = sqlite3.connect(tmp_path / "s.db")
    with db:
        db.execute("INSERT INTO job_history (job_id, state, at) VALUES (?, 'queued', ?)", (e.job.id, e.job.created))
    db.close()
    assert [h["state"] for h in await store.history(e.job.id)] == ["queued"]


async def test_ids_at_the_end_of_sqlite_s_range_are_sqlite_s_own(store, tmp_path):
    """Past the largest rowid SQLite picks ids at random (sqlite.org/autoinc.html): a batch that
    would go past it is inserted with those, read back, and each answer still names its row."""
    from bridge.store.sqlite.jobs import MAX_ROWID
    db = sqlite3.connect(tmp_path / "s.db")
    with db:
        db.execute("INSERT INTO jobs (id, account, id_sms_api, kind, phone_number, priority, due, expires, state, "
                   "created, updated) VALUES (?, 'other', 'top', 'sms', '+33612345678', 1, 0, 0, 'failed', 0, 0)",
                   (MAX_ROWID - 1,))
    db.close()
    out = await store.enqueue("a", [NewJob(kind="sms", phone_number="+33612345678", message=f"m{i}")
                                    for i in range(3)])
    assert len({e.job.id for e in out}) == 3
    for e in out:
        assert await store.get_job("a", e.job.id_sms_api) == e.job


@pytest.fixture
async def quiet_store(tmp_path):
    """A store whose accounts are sent no webhook events: batches are inserted as planned."""
    s = await opened(tmp_path / "q.db", False)
    yield s
    await s.close()


@pytest.fixture
def long_way(monkeypatch):
    """The batches that went the long way (``insert_jobs``), by account."""
    from bridge.store.sqlite import jobs as sqlite_jobs
    taken: list[str] = []
    real = sqlite_jobs.insert_jobs

    def counted(db, recorder, account, jobs, uid):
        taken.append(account)
        return real(db, recorder, account, jobs, uid)
    monkeypatch.setattr(sqlite_jobs, "insert_jobs", counted)
    return taken


def batch(links: bool = True) -> list[NewJob]:
    """Two chunks of messages: the first chunk's alike, the rest each its own (priority, date,
    lifetime, a text of two parts, a key of its own; ``links``: a tracked link)."""
    from bridge.store.sqlite.jobs import ENQUEUE_CHUNK
    out = [NewJob(kind="sms", phone_number=f"+336{i:08d}", message=f"m{i}") for i in range(ENQUEUE_CHUNK)]
    for i in range(ENQUEUE_CHUNK, ENQUEUE_CHUNK + 100):
        out.append(NewJob(kind="sms", phone_number=f"+336{i:08d}", message="x" * (170 if i % 2 else 10),
                          priority=i % 3, due=1_900_000_000.0 + i, ttl_s=3600.0 + i, parts=2 if i % 2 else 1,
                          id_sms_api=f"own-{i}" if i % 5 == 0 else None,
                          url="https://example.com/o" if links and i % 7 == 0 else None,
                          link_code=f"code{i}" if links and i % 7 == 0 else None))
    return out


def stored(path, table: str, columns: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT {columns} FROM {table} ORDER BY rowid").fetchall()
    finally:
        db.close()


JOB_FIELDS = "kind, phone_number, message, url, priority, state, parts, encoding, report, attempts, sealed, due, expires"


def comparable(rows: list[tuple]) -> list[tuple]:
    """Rows of JOB_FIELDS, a date given as it is, one of the moment against the moment (to the ms)."""
    out = []
    for *fields, due, expires in rows:
        now = min(due, expires - 3600)  # undated: due is the moment; dated: far past it
        out.append((*fields, due if due > 1.8e9 else "now", round(expires - (0 if due > 1.8e9 else now), 3)))
    return out


@pytest.mark.parametrize("links", [True, False])
async def test_a_planned_batch_is_stored_as_the_long_way_stores_it(quiet_store, store, tmp_path, long_way, links):
    """Planned on the event loop's thread, a batch leaves the store thread only its statements;
    the rows (every column but the time and the generated keys), the links, the counters and the
    answers are those ``insert_jobs`` makes (the ``store`` fixture's account is sent every event:
    its batches go the long way). Without links, a chunk of jobs each its own is bound a row at
    a time as one with links is."""
    jobs = batch(links)
    planned = await quiet_store.enqueue("a", jobs)
    assert long_way == []
    long = await store.enqueue("a", jobs)
    assert long_way == ["a"]
    rows = comparable(stored(tmp_path / "q.db", "jobs", JOB_FIELDS))
    assert len(rows) == len(jobs) and len({r[-2:] for r in rows}) > 2
    assert rows == comparable(stored(tmp_path / "s.db", "jobs", JOB_FIELDS))
    assert [e.job.id for e in planned] == [r[0] for r in stored(tmp_path / "q.db", "jobs", "id")]
    for e in planned:
        assert e.created and await quiet_store.get_job("a", e.job.id_sms_api) == e.job
    assert [e.job.id_sms_api for e in planned if e.job.id_sms_api.startswith("own-")] == \
           [new.id_sms_api for new in jobs if new.id_sms_api]
    link_rows = stored(tmp_path / "q.db", "links", "code, job_id, id_sms_api, phone_number, url")
    assert link_rows == [(f"code{int(e.job.phone_number[4:])}", e.job.id, e.job.id_sms_api, e.job.phone_number,
                          e.job.url) for e in planned if e.job.url]
    assert len(link_rows) == len(stored(tmp_path / "s.db", "links", "code")) == sum(1 for new in jobs if new.url)
    assert (len(link_rows) > 0) == links
    by_priority = collections.Counter(("queued", new.priority) for new in jobs)
    assert len(by_priority) == 3 and await quiet_store.counts() == await store.counts() == by_priority
    assert [e.job.phone_number for e in long] == [e.job.phone_number for e in planned]


async def test_a_batch_whose_plan_does_not_hold_goes_the_long_way(quiet_store, tmp_path, long_way):
    """A key of the batch already stored (the message sent before): looked up in the transaction,
    the batch goes the long way, and is answered as before: the stored job, not a new one."""
    [first] = await quiet_store.enqueue("a", [sms(id_sms_api="k1")])
    [new] = await quiet_store.enqueue("a", [sms(id_sms_api="k2")])
    assert long_way == []
    again = await quiet_store.enqueue("a", [sms(id_sms_api="k3"), NewJob(kind="sms", phone_number="+33611111111",
                                                                          message="other", id_sms_api="k1")])
    assert long_way == ["a"]
    assert [e.created for e in again] == [True, False] and again[1].job == first.job
    assert [r[0] for r in stored(tmp_path / "q.db", "jobs", "id_sms_api")] == ["k1", "k2", "k3"]


async def test_a_generated_key_already_taken_is_replaced_and_nothing_is_lost(quiet_store, tmp_path, long_way,
                                                                            monkeypatch):
    """Generated keys made in the same millisecond with the same random characters as a stored
    one (about once in 10^8 pairs of batches): what the planned batch inserted is taken back, the
    batch goes the long way, and every message is stored once, the taken one under a new key."""
    from bridge.store import shaping
    [old] = await quiet_store.enqueue("a", [sms()])
    real = shaping.new_id_sms_apis
    calls: list[int] = []

    def clashing(count: int) -> list[str]:
        calls.append(count)
        keys = real(count)
        return [old.job.id_sms_api, *keys[1:]] if len(calls) == 1 else keys
    monkeypatch.setattr(shaping, "new_id_sms_apis", clashing)
    out = await quiet_store.enqueue("a", [NewJob(kind="sms", phone_number=f"+336{i:08d}", message=f"m{i}")
                                          for i in range(700)])
    assert long_way == ["a"]
    assert all(e.created for e in out) and len({e.job.id_sms_api for e in out}) == 700
    assert old.job.id_sms_api not in {e.job.id_sms_api for e in out}
    rows = stored(tmp_path / "q.db", "jobs", "id, id_sms_api, phone_number")
    assert len(rows) == 701 and rows[0] == (old.job.id, old.job.id_sms_api, old.job.phone_number)
    assert [(e.job.id, e.job.id_sms_api, e.job.phone_number) for e in out] == rows[1:]
    assert await quiet_store.counts() == {("queued", 1): 701}


async def test_a_failing_write_alone_in_its_group_leaves_nothing(store):
    """A write alone in its group runs without a savepoint (its transaction is one): failing, it
    leaves nothing of what it did, and the next write passes."""
    def half(db):
        db.execute("INSERT INTO jobs (account, id_sms_api, kind, phone_number, priority, due, expires, state, "
                   "created, updated) VALUES ('a', 'half', 'sms', '+33612345678', 1, 0, 0, 'queued', 0, 0)")
        db.execute("INSERT INTO jobs (id) VALUES (NULL)")  # violates NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        await store._run(store._tx(half))
    assert await store.get_job("a", "half") is None
    [e] = await store.enqueue("a", [sms(id_sms_api="after")])
    assert await store.get_job("a", "after") == e.job
