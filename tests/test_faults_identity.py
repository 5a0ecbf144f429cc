"""Identities that must survive what a gateway meets: a store restored from a
backup, a phone whose journal was lost (reinstalled, replaced), and a link cut
longer than the grace while the phone keeps sending. Each virtual phone's radio
log is the truth: nothing may be reported that is not in it, nothing may be in
it twice, nothing accepted may be lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

from conftest import make_config, running, timeout, wait_until
from test_crash import api_up, post, radio_lines, start, wait, write_config

from bridge.store.model import NewJob
from device_agents import protocol as p
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

HEADER = {"login": "user@email.com", "accessKey": "your-access-key"}
ACCOUNT = "user@email.com"


def _phone(device_id: str) -> dict:
    """A device whose agent the test runs itself (its token fixed in the config)."""
    return {"id": device_id, "kind": "modem", "account": ACCOUNT, "port": "/dev/null", "standalone": True,
            "token": f"{device_id}-token", "max_per_minute": 0}


def _agent(url: str, device_id: str, folder: Path, *, latency: float = 0.0, journal: str = "journal",
           window: int = 8) -> AgentRuntime:
    radio = VirtualRadio(device_id=device_id, radio_log=folder / f"{device_id}-radio.jsonl",
                         settings=RadioSettings(latency=latency, jitter=0.0, delivery_delay=0.0))
    return AgentRuntime(url=url, device_id=device_id, token=f"{device_id}-token", backend=radio,
                        journal=Journal(folder / f"{device_id}-{journal}.jsonl"), window=window, workers=window,
                        backoff_max=0.2)


@contextlib.asynccontextmanager
async def _agent_running(agent: AgentRuntime):
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await agent.aclose()
        agent.backend.close()  # type: ignore[attr-defined]


def _radio(folder: Path, device_id: str) -> list[dict]:
    path = folder / f"{device_id}-radio.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _enqueue(daemon, n: int, prefix: str):
    out = await daemon.store.enqueue(ACCOUNT, [NewJob(kind="sms", phone_number="+33612345678",
                                                      message=f"{prefix} {i}", id_sms_api=f"{prefix}-{i}")
                                               for i in range(n)])
    daemon.dispatcher.wake()
    return [e.job for e in out]


async def _jobs(daemon, jobs):
    return [await daemon.store.get_job(ACCOUNT, j.id_sms_api) for j in jobs]


# -- 1. a store restored from a backup, the documented way ---------------------------------


def _db_states(tmp_path: Path) -> dict[str, str]:
    db = sqlite3.connect(tmp_path / "data" / "simbridge.db")
    try:
        return dict(db.execute("SELECT id_sms_api, state FROM jobs").fetchall())
    finally:
        db.close()


def _send(port: int, prefix: str, n: int) -> list[str]:
    answer = post(port, {"header": HEADER, "messages": [
        {"phone_number": "+33612345678", "message": f"{prefix} {i}", "id_sms_api": f"{prefix}-{i}"}
        for i in range(n)]})
    assert all(a["sent"] == 1 for a in answer), answer
    return [a["id_sms_api"] for a in answer]


def _settled(tmp_path: Path, ids: list[str]) -> bool:
    states = _db_states(tmp_path)
    return all(states.get(i) in ("delivered", "failed", "unconfirmed") for i in ids)


def test_a_store_restored_from_a_backup_reports_nothing_it_did_not_send(tmp_path):
    """docs/operations.md §6 end to end: backup while running, more traffic, stop,
    restore, start, more traffic. The restored store hands out the row ids of the
    jobs made after the backup again; the phone's journal knows those ids."""
    config, port = write_config(tmp_path)
    log = tmp_path / "daemon.log"
    db = tmp_path / "data" / "simbridge.db"
    backup = tmp_path / "backup.db"
    n = 20
    proc = start(config, log)
    try:
        wait(lambda: api_up(port), 20, "the API")
        before = _send(port, "before", n)
        wait(lambda: _settled(tmp_path, before), 60, "the first messages delivered")
        # The documented backup: SQLite's online backup, while the daemon runs (the sqlite3 shell's
        # .backup; without the shell, the same online backup API through Python's sqlite3).
        if shutil.which("sqlite3"):
            subprocess.run(["sqlite3", str(db), f".backup '{backup}'"], check=True, timeout=timeout(30))
        else:
            with contextlib.closing(sqlite3.connect(db)) as source, contextlib.closing(sqlite3.connect(backup)) as copy:
                source.backup(copy)
        after_backup = _send(port, "after-backup", n)
        wait(lambda: _settled(tmp_path, after_backup), 60, "the messages after the backup delivered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=timeout(20)) == 0, log.read_text()[-2000:]
        # The documented restore: stopped, the backup in place, no -wal / -shm left.
        shutil.copyfile(backup, db)
        for leftover in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            leftover.unlink(missing_ok=True)
        proc = start(config, log)
        wait(lambda: api_up(port), 20, "the API after the restore")
        restored = _send(port, "restored", n)
        wait(lambda: _settled(tmp_path, restored), 60, "the messages after the restore settled")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    on_radio = [r["id_sms_api"] for r in radio_lines(tmp_path)]
    assert len(on_radio) == len(set(on_radio)), "a message went on the radio twice"
    states = _db_states(tmp_path)
    reported = sorted(i for i, s in states.items() if s in ("sent", "delivered"))
    assert not set(reported) - set(on_radio), f"reported sent but never on the radio: {set(reported) - set(on_radio)}"
    assert sorted(on_radio) == sorted(before + after_backup + restored)  # every message exactly once
    assert all(states[i] == "delivered" for i in restored)
    assert proc.returncode == 0, log.read_text()[-2000:]


# -- 2. a phone whose journal was lost ----------------------------------------------------------


async def test_a_phone_with_a_new_journal_is_heard_and_its_old_jobs_are_never_sent_again(tmp_path):
    """Reinstalled (same device id, journal gone): its event ids start again at 1, which
    must not be taken for events already stored; the jobs its old journal held may have
    been sent: unconfirmed, never pushed to the new one, never left dispatched."""
    async with running(make_config(tmp_path, devices=[_phone("phone")])) as daemon:
        url = f"ws://127.0.0.1:{daemon.listener.port}"
        # The first install: a radio so slow the jobs stay in hand.
        async with _agent_running(_agent(url, "phone", tmp_path, latency=3600, journal="first")) as first:
            await wait_until(first.connected.is_set, what="first install online")
            first.emit([p.SmsReceived(event_id=first.new_event_id(), sender="+33600000001", text=f"first {i}",
                                      at=1.0) for i in range(3)])
            await wait_until(lambda: _inbound(daemon, 3), what="the first install's SMS stored")
            held = await _enqueue(daemon, 2, "held")
            await wait_until(lambda: all(first.journal.state_of(j.job_id) == "sending" for j in held),
                             what="the jobs in the first install's hands")
        # Reinstalled: a new journal, a fast radio; two SMS came in before it reached the bridge
        # (its event ids 1 and 2, as the first install's first two).
        second = _agent(url, "phone", tmp_path, journal="second")
        second.emit([p.SmsReceived(event_id=second.new_event_id(), sender="+33600000002", text=f"second {i}",
                                   at=2.0) for i in range(2)])
        assert [e.event_id for e in second.journal.pending_events()] == ["1", "2"]
        async with _agent_running(second):
            await wait_until(second.connected.is_set, what="second install online")
            rows = await wait_until(lambda: _inbound(daemon, 5), what="the second install's SMS stored")
            assert sorted(r["text"] for r in rows) == ["first 0", "first 1", "first 2", "second 0", "second 1"]
            jobs = await wait_until(lambda: _all_in(daemon, held, "unconfirmed"), what="the held jobs settled")
            assert all("earlier journal" in j.reason for j in jobs)
            # and the phone works: a new job goes on its radio, the old ones never do
            [fresh] = await _enqueue(daemon, 1, "fresh")
            await wait_until(lambda: _all_in(daemon, [fresh], "delivered"), what="a new job delivered")
        assert [r["id_sms_api"] for r in _radio(tmp_path, "phone")] == ["fresh-0"]
        assert await daemon.store.in_flight("phone") == []


async def _inbound(daemon, n):
    rows = await daemon.store.inbound(ACCOUNT, limit=100)
    return rows if len(rows) >= n else None


async def _all_in(daemon, jobs, state):
    got = await _jobs(daemon, jobs)
    return got if all(j.state == state for j in got) else None


# -- 3. a link cut longer than the grace while the phone keeps sending --------------------------


class Proxy:
    """A TCP relay between an agent and the listener that the test can cut (every
    connection closed, new ones refused) and mend, on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


async def test_a_link_cut_longer_than_the_grace_never_puts_a_job_on_a_second_radio(tmp_path):
    config = make_config(tmp_path, devices=[_phone("phone"), _phone("other")],
                         agents={"lease_s": timeout(0.5), "requeue_grace_s": timeout(1.0), "window": 16})
    async with running(config) as daemon:
        proxy = Proxy(daemon.listener.port)
        await proxy.open()
        direct = f"ws://127.0.0.1:{daemon.listener.port}"
        # The phone's radio takes its time: the jobs go on the air while its link is down.
        # (A window of 16: the 8 jobs go out in one push, one place kept for priority 2.)
        async with _agent_running(_agent(f"ws://127.0.0.1:{proxy.port}", "phone", tmp_path,
                                         latency=timeout(1.0), window=16)) as phone:
            await wait_until(lambda: "phone" in daemon.dispatcher.sessions, what="phone online")
            jobs = await _enqueue(daemon, 8, "cut")
            await wait_until(lambda: all(phone.journal.state_of(j.job_id) for j in jobs),
                             what="all 8 jobs in the phone's hands")
            await proxy.cut()
            await wait_until(lambda: "phone" not in daemon.dispatcher.sessions, what="the bridge sees the cut")
            async with _agent_running(_agent(direct, "other", tmp_path)):
                await wait_until(lambda: "other" in daemon.dispatcher.sessions, what="another phone online")
                # The phone keeps working: every job goes on its radio while the link is down.
                await wait_until(lambda: len(_radio(tmp_path, "phone")) == 8, within=20,
                                 what="the phone sends while cut off")
                # Past the grace, the bridge has decided about every job.
                await wait_until(lambda: _decided(daemon, jobs), within=20, what="the grace acted")
                got = await _jobs(daemon, jobs)
                assert all(j.state == "unconfirmed" and j.device_id == "phone" for j in got), \
                    [(j.state, j.device_id) for j in got]
                assert all("may have sent it" in j.reason for j in got)
                # The link comes back: the phone's ledger and outbox settle everything.
                await proxy.open()
                await wait_until(lambda: "phone" in daemon.dispatcher.sessions, what="phone back")
                settled = await wait_until(lambda: _all_in(daemon, jobs, "delivered"), within=20,
                                           what="every job settled")
                assert all(j.device_id == "phone" for j in settled)
                # and the other phone still works
                [later] = await _enqueue(daemon, 1, "later")
                await wait_until(lambda: _all_in(daemon, [later], "delivered"), what="a later job delivered")
        histories = [[h["state"] for h in await daemon.store.history(job.id)] for job in jobs]
        await proxy.cut()
    on_air = [r["id_sms_api"] for r in _radio(tmp_path, "phone") + _radio(tmp_path, "other")]
    assert sorted(on_air) == sorted([j.id_sms_api for j in jobs] + ["later-0"]), on_air  # each on one radio, once
    for states in histories:
        assert states == ["queued", "dispatched", "unconfirmed", "dispatched", "sent", "delivered"], states


async def _decided(daemon, jobs) -> bool:
    """Every job either waits as unconfirmed or was given to another device."""
    await daemon.dispatcher.maintain()
    got = await _jobs(daemon, jobs)
    return all(j.state == "unconfirmed" or j.device_id != "phone" for j in got)
