"""Storage faults, each on a real small file system: the disk holding the store
fills up, turns read-only, or loses the database file while the daemon runs;
an agent's journal meets a full disk.

While the store cannot write, nothing is answered 200 that was not stored
(503 with Retry-After, naming the fault), /healthz, ``simbridge devices`` and
the systemd status say so; once there is room again it resumes by itself,
and every message accepted is sent exactly once.

The file systems are real: a tmpfs of a few MiB (``mount -t tmpfs -o size=…``)
filled by a file until the kernel answers ENOSPC, and an ext4 image whose
journal is aborted (``mount -o remount,abort``: what ``errors=remount-ro``
does on a failing disk; a plain ``remount,ro`` is refused while files are open
for writing, see mount(8), EBUSY). Root is needed to mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_config, running, timeout, wait_until
from ops_util import cli_env, simbridge_cmd, write_config

from bridge.store.model import NewJob
from device_agents.journal import Journal
from device_agents.runtime import AgentRuntime
from device_agents.virtual.phone import RadioSettings, VirtualRadio

ACCOUNT = "user@email.com"
HEADER = {"login": ACCOUNT, "accessKey": "your-access-key"}


# -- real file systems -------------------------------------------------------------------


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=timeout(30))
    if result.returncode != 0:
        raise OSError(result.stderr.strip() or f"mount {' '.join(args)} failed")


def _umount(path: Path) -> None:
    for _ in range(50):  # a daemon just stopped may still hold a file for an instant
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        _umount(path)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the kernel says ENOSPC; the file (to free it)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


# -- a real daemon in a subprocess -----------------------------------------------------------


def http(method: str, port: int, path: str, body: object = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers); an error status is an answer too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer your-access-key"})
    try:
        with urllib.request.urlopen(req, timeout=timeout(30)) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def sendsms(port: int, ids: list[str]) -> tuple[int, object, dict]:
    return http("POST", port, "/api/v1/sendsms", {"header": HEADER, "messages": [
        {"phone_number": "+33612345678", "message": f"storage test {i}", "id_sms_api": i} for i in ids]})


def poll(condition, within: float, what: str):
    deadline = time.monotonic() + timeout(within)
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def healthz(port: int) -> tuple[int, dict]:
    try:
        status, body, _ = http("GET", port, "/healthz")
        return status, body
    except OSError:
        return 0, {}


class Daemon:
    """``simbridge run`` in a subprocess; its virtual phone's radio log outside the
    store's file system (so the radio is not the thing the disk refuses)."""

    DEVICE = """
[[devices]]
id = "sim-1"
kind = "virtual"
account = "user@email.com"
max_per_minute = 0
latency = {latency}
delivery_delay = 0.02
"""

    def __init__(self, tmp_path: Path, data: Path, *, latency: float = 0.0, env: dict[str, str] | None = None):
        self.radio = tmp_path / "radio.jsonl"
        self.radio.touch()
        (data / "virtual-sim-1-radio.jsonl").symlink_to(self.radio)
        self.config, self.port, _ = write_config(tmp_path, devices=self.DEVICE.format(latency=latency))
        self.db = data / "simbridge.db"
        self.log = tmp_path / "daemon.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(simbridge_cmd("run", "--config", str(self.config)), stdout=out,
                                         stderr=subprocess.STDOUT, env=env or cli_env())
        poll(lambda: healthz(self.port)[0] == 200, 30, "the API")
        poll(lambda: self.device_online(), 30, "the virtual phone online")

    def device_online(self) -> bool:
        status, body, _ = http("GET", self.port, "/api/v1/devices")
        return status == 200 and body["data"][0]["state"] == "online"

    def sent(self) -> list[str]:
        return [json.loads(line)["id_sms_api"] for line in self.radio.read_text().splitlines() if line.strip()]

    def states(self, db: Path | None = None) -> dict[str, str]:
        conn = sqlite3.connect(f"file:{db or self.db}?mode=ro", uri=True)
        try:
            return dict(conn.execute("SELECT id_sms_api, state FROM jobs").fetchall())
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(simbridge_cmd(*args, "--config", str(self.config)), capture_output=True, text=True,
                              env=cli_env(), timeout=timeout(60))


def assert_refused(answer: tuple[int, object, dict], cause: str) -> None:
    status, body, headers = answer
    assert status == 503, (status, body)
    assert int(headers["Retry-After"]) >= 1
    assert isinstance(body, dict) and body["status"] == "error" and cause in body["message"], body
    assert "not accepted" in body["message"]


class NotifySocket:
    """systemd's notify socket, as sd_notify(3) describes it: one datagram a
    message, read as they come (as systemd does) by a thread."""

    def __init__(self, path: Path) -> None:
        import socket
        import threading
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[list[str]] = []
        self._open = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._open:
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue
            except OSError:
                return

    def drain(self) -> list[list[str]]:
        return list(self.messages)

    def close(self) -> None:
        self._open = False
        self._reader.join()
        self.sock.close()


# -- the disk fills up -------------------------------------------------------------------------


def test_disk_full_refuses_with_503_says_so_and_resumes_by_itself_with_nothing_lost_or_doubled(tmp_path):
    sock_dir = Path("/tmp") / f"sbsf{os.getpid()}"  # AF_UNIX paths are short
    sock_dir.mkdir(exist_ok=True)
    notify = NotifySocket(sock_dir / "notify")
    env = cli_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    with tmpfs(tmp_path / "data", "12m") as data:
        daemon = Daemon(tmp_path, data, latency=0.01, env=env)
        try:
            accepted = [f"before-{i}" for i in range(300)]
            status, answers, _ = sendsms(daemon.port, accepted)
            assert status == 200 and all(a["sent"] == 1 for a in answers)
            poll(lambda: len(daemon.sent()) >= 20, 30, "sends to start")
            filler = fill(data)  # while the phone is busy with the rest
            assert len(daemon.sent()) < len(accepted), "the disk filled too late to prove anything"

            # Every write is refused, clearly, and nothing refused is stored.
            refused: list[str] = []

            def refusal():
                ids = [f"refused-{len(refused)}"]
                answer = sendsms(daemon.port, ids)
                if answer[0] == 200:  # it found room: stored, so it is accepted and must be sent
                    accepted.extend(ids)
                    return None
                refused.extend(ids)
                return answer
            assert_refused(poll(refusal, 30, "a 503 while the disk is full"), "is full")
            assert_refused(sendsms(daemon.port, ["refused-x"]), "is full")
            refused.append("refused-x")
            status, body = healthz(daemon.port)
            assert status == 503 and "is full" in body["store"], body
            shown = daemon.cli("devices")
            assert shown.returncode == 1 and "STORE FAULT" in shown.stdout and "is full" in shown.stdout, shown
            doctor = daemon.cli("doctor")
            assert "store (running daemon)" in doctor.stdout and "is full" in doctor.stdout, doctor.stdout
            # systemd is told (STATUS), and the watchdog still fed: a restart frees no space.
            degraded = poll(lambda: next((i for i, m in enumerate(notify.drain())
                                          if any(x.startswith("STATUS=degraded") and "is full" in x for x in m)),
                                         None), 20, "STATUS=degraded")
            poll(lambda: any("WATCHDOG=1" in m for m in notify.drain()[degraded + 1:]), 20, "a watchdog ping")

            os.unlink(filler)  # space returns; nothing is restarted
            poll(lambda: healthz(daemon.port)[0] == 200, 30, "/healthz ok again")
            after = [f"after-{i}" for i in range(20)]
            status, answers, _ = sendsms(daemon.port, after)
            assert status == 200 and all(a["sent"] == 1 for a in answers), answers
            accepted += after
            poll(lambda: sum(1 for s in daemon.states().values() if s == "delivered") == len(accepted), 120,
                 "every accepted message delivered")
            assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        finally:
            daemon.stop()
            notify.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
        states = daemon.states()
    sent = daemon.sent()
    assert sorted(sent) == sorted(accepted), f"{len(sent)} transmissions for {len(accepted)} accepted"
    assert not set(refused) & set(states), "a refused message was stored"
    assert set(states) == set(accepted)


# -- the database file is deleted --------------------------------------------------------------


def test_database_deleted_while_running_is_noticed_refused_with_503_and_its_content_kept(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    daemon = Daemon(tmp_path, data)
    try:
        ids = [f"kept-{i}" for i in range(5)]
        status, _, _ = sendsms(daemon.port, ids)
        assert status == 200
        poll(lambda: sorted(daemon.sent()) == sorted(ids), 30, "the messages sent")
        os.unlink(daemon.db)
        # Noticed without traffic (the daemon looks every second) ...
        status, body = poll(lambda: (h := healthz(daemon.port))[0] == 503 and h, 20, "/healthz 503")
        assert "deleted" in body["store"], body
        # ... and no write is taken into a file nobody could open again.
        assert_refused(sendsms(daemon.port, ["lost-1"]), "deleted")
        shown = daemon.cli("devices", "--json")
        assert shown.returncode == 1 and "deleted" in shown.stderr
        assert json.loads(shown.stdout)[0]["id"] == "sim-1"  # the array is what it was
        [rescued] = data.glob("simbridge.db.rescued-*")
        assert str(rescued) in body["store"]
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    kept = daemon.states(rescued)
    assert set(ids) <= set(kept) and "lost-1" not in kept


# -- the file system turns read-only -----------------------------------------------------------


@contextlib.contextmanager
def ext4(path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("an ext4 image needs root and mkfs.ext4")
    image = path.with_suffix(".img")
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    path.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-o", "loop", str(image), str(path))
    except OSError as exc:
        pytest.skip(f"cannot mount a loop device here: {exc}")
    try:
        yield path
    finally:
        _umount(path)


def test_file_system_turned_read_only_is_refused_with_503_naming_it(tmp_path):
    with ext4(tmp_path / "data") as data:
        daemon = Daemon(tmp_path, data)
        try:
            status, _, _ = sendsms(daemon.port, ["before"])
            assert status == 200
            poll(lambda: daemon.sent() == ["before"], 30, "the message sent")
            _mount("-o", "remount,abort", str(data))  # as errors=remount-ro does on a failing disk
            assert_refused(poll(lambda: (a := sendsms(daemon.port, ["refused"]))[0] != 200 and a, 30,
                                "a refusal"), "read-only")
            status, body = healthz(daemon.port)
            assert status == 503 and "read-only" in body["store"], body
            assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        finally:
            daemon.stop()


# -- an agent's journal meets a full disk -------------------------------------------------------

RAW = {"id": "raw", "kind": "modem", "account": ACCOUNT, "port": "/dev/null", "standalone": True,
       "token": "raw-token", "max_per_minute": 0}


async def test_agent_journal_full_holds_its_work_logs_it_and_resumes_when_space_returns(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="device_agents")
    config = make_config(tmp_path, devices=[RAW])
    radio_log = tmp_path / "raw-radio.jsonl"
    with tmpfs(tmp_path / "agent", "1m") as agent_dir:
        async with running(config) as daemon:
            radio = VirtualRadio(device_id="raw", radio_log=radio_log,
                                 settings=RadioSettings(latency=0.02, jitter=0.0, delivery_delay=0.05))
            runtime = AgentRuntime(url=f"ws://127.0.0.1:{daemon.listener.port}", device_id="raw", token="raw-token",
                                   backend=radio, journal=Journal(agent_dir / "journal.jsonl"), window=8, workers=2)
            task = asyncio.create_task(runtime.run())
            try:
                out = await daemon.store.enqueue(ACCOUNT, [NewJob(kind="sms", phone_number="+33612345678",
                                                                  message=f"m{i}") for i in range(60)])
                daemon.dispatcher.wake()
                jobs = [e.job for e in out]
                await wait_until(lambda: radio_log.exists() and len(radio_log.read_text().splitlines()) >= 5,
                                 what="some sends")
                filler = fill(agent_dir)
                await wait_until(lambda: runtime.journal_fault is not None, within=20, what="the fault noticed")
                assert "No space left" in runtime.journal_fault
                assert any("cannot be written" in r.getMessage() and r.levelno >= logging.ERROR
                           for r in caplog.records)
                # No job is begun while its "sending" cannot be written; the outcomes of
                # the ones already on the radio (2 workers) are held, not lost.
                begun = len(radio_log.read_text().splitlines())
                await wait_until(lambda: runtime._held_reports, within=20, what="an outcome held in memory")
                assert len(radio_log.read_text().splitlines()) <= begun + 2
                assert not task.done()

                os.unlink(filler)
                await wait_until(lambda: runtime.journal_fault is None, within=20, what="the journal writes again")

                async def all_delivered():
                    for job in jobs:
                        got = await daemon.store.get_job(ACCOUNT, job.id_sms_api)
                        if got.state != "delivered":
                            await daemon.dispatcher.maintain()
                            return False
                    return True
                await wait_until(all_delivered, within=60, what="every job delivered")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await runtime.aclose()
                radio.close()
    sent = [json.loads(line)["job_id"] for line in radio_log.read_text().splitlines()]
    assert sorted(sent) == sorted(j.job_id for j in jobs)  # each exactly once


# -- the store alone: a deleted file on a full disk ----------------------------------------------


class _Everything:
    """An event filter that records every event (the store's one collaborator)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: True


async def test_deleted_database_on_a_full_disk_is_saved_once_there_is_room(tmp_path):
    from bridge.store.model import StoreUnavailable
    from bridge.store.sqlite import SqliteStore

    with tmpfs(tmp_path / "data", "4m") as data:
        store = SqliteStore(data / "simbridge.db", event_filter=_Everything())
        store.RESCUE_RETRY_S = 0.0
        await store.open()
        try:
            await store.enqueue(ACCOUNT, [NewJob(kind="sms", phone_number="+33612345678", message="kept",
                                                 id_sms_api="kept")])
            os.unlink(data / "simbridge.db")
            filler = fill(data)
            with pytest.raises(StoreUnavailable, match="could not be saved yet"):
                await store.enqueue(ACCOUNT, [NewJob(kind="sms", phone_number="+33612345678", message="lost",
                                                     id_sms_api="lost")])
            assert not list(data.glob("simbridge.db.rescued-*"))  # no half copy left behind
            os.unlink(filler)
            with pytest.raises(StoreUnavailable, match="saved to"):
                await store.ping()
            [rescued] = data.glob("simbridge.db.rescued-*")
            conn = sqlite3.connect(rescued)
            try:
                assert conn.execute("SELECT id_sms_api FROM jobs").fetchall() == [("kept",)]
            finally:
                conn.close()
        finally:
            await store.close()


def test_a_notify_socket_nobody_reads_never_blocks_the_daemon(tmp_path):
    """A datagram socket's queue is short (net.unix.max_dgram_qlen, 10 by default on
    Linux, see unix(7)); a sender on a blocking socket waits once it is full. The
    daemon notifies from its event loop: it must drop the message instead."""
    import socket
    import threading

    from bridge.ops.notify import Notifier

    path = Path("/tmp") / f"sbnq{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    try:
        notifier = Notifier(environ={"NOTIFY_SOCKET": str(path)})
        sent: list[bool] = []
        sender = threading.Thread(target=lambda: sent.extend(notifier.watchdog() for _ in range(200)), daemon=True)
        sender.start()
        sender.join(timeout(10))
        assert not sender.is_alive(), "the notifier blocked on a socket nobody reads"
        assert sent[0] and not sent[-1]  # the first ones queued, the rest dropped
        notifier.close()
    finally:
        server.close()
        path.unlink()


# -- a modem agent's journal full when an SMS comes in -------------------------------------------


async def test_modem_incoming_sms_on_a_full_journal_stays_on_the_sim_and_is_reported_once_there_is_room(
        tmp_path, caplog):
    from fakes.mini_bridge import MiniBridge

    from device_agents import protocol
    from device_agents.modem.agent import ModemAgent, ModemSettings
    from device_agents.modem.virtual import VirtualModem

    caplog.set_level(logging.WARNING, logger="device_agents")
    with VirtualModem(link=tmp_path / "modem", radio_log=tmp_path / "radio.jsonl", report_delay=0.05) as modem, \
            tmpfs(tmp_path / "agent", "1m") as agent_dir:
        async with MiniBridge(tokens={"m1": "modem-token"}) as bridge:
            agent = ModemAgent(device_id="m1", url=bridge.url, token="modem-token",
                               journal_path=agent_dir / "journal.jsonl",
                               settings=ModemSettings(port=str(modem.link), command_timeout=2.0, send_timeout=3.0,
                                                      health_interval=0.5, reopen_backoff_max=0.5),
                               status_interval=0.5)
            task = asyncio.create_task(agent.run())
            try:
                await wait_until(lambda: bridge.connected("m1") or task.done(), what="agent connected")
                assert not task.done()
                filler = fill(agent_dir)
                # tmpfs gives whole pages: the journal's last one still has room for a few
                # lines. Blank lines (skipped on replay) take it, so its next write is refused.
                journal = agent_dir / "journal.jsonl"
                pad = -journal.stat().st_size % os.sysconf("SC_PAGE_SIZE")
                fd = os.open(journal, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, b"\n" * pad)
                finally:
                    os.close(fd)
                modem.incoming_sms("+33698765432", "Bonjour, disque plein")
                await wait_until(lambda: task.done() or not modem.snapshot()["storage"]
                                 or (agent.runtime is not None and agent.runtime.journal_fault is not None),
                                 within=20, what="the refused write noticed")
                assert not task.done(), f"the agent died: {task.exception()!r}"
                assert agent.runtime is not None and "No space left" in (agent.runtime.journal_fault or "")
                # Kept on the SIM while nothing says it was journalled; the agent lives on.
                parts = agent._parts
                await wait_until(lambda: parts is not None and parts.incoming.held, within=20,
                                 what="the SMS held for the journal")
                assert len(modem.snapshot()["storage"]) == 1
                assert not bridge.of_kind(protocol.SmsReceived) and not task.done()

                os.unlink(filler)
                [event] = await wait_until(lambda: bridge.of_kind(protocol.SmsReceived), within=30,
                                           what="the SMS reported once the journal writes")
                assert event.text == "Bonjour, disque plein" and event.sender == "+33698765432"
                await wait_until(lambda: not modem.snapshot()["storage"], within=30, what="deleted after the ack")
                assert agent.runtime is not None and agent.runtime.journal_fault is None
                assert len(bridge.of_kind(protocol.SmsReceived)) == 1 and not task.done()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
