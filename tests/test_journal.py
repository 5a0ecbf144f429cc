"""The agent's journal: what a restart (or a compaction) keeps, and what it lets go."""

from __future__ import annotations

import pytest

from device_agents import journal as journal_module
from device_agents import protocol as p
from device_agents.journal import Journal

JOB = {"kind": "send_sms", "job_id": "1", "to": "+33612345678", "text": "hello"}


def test_replay_after_a_restart_keeps_ledger_and_unacked_events(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.record_jobs([("1", "accepted", JOB), ("2", "accepted", dict(JOB, job_id="2"))])
    j.set_job("1", "sending")
    j.set_job("2", "delivered")
    a, b = (p.SmsReceived(event_id=j.next_event_id(), sender="+33612345678", text=t, at=1.0) for t in "ab")
    j.add_events([a, b])
    j.ack([a.event_id])
    j.close()
    again = Journal(tmp_path / "j.jsonl")
    assert again.state_of("1") == "sending" and again.jobs["1"]["job"] == JOB  # needed to recover it
    assert again.state_of("2") == "delivered" and "job" not in again.jobs["2"]  # settled: body let go
    assert [e.event_id for e in again.pending_events()] == [b.event_id]
    assert again.seq == j.seq  # event ids never repeat


def test_compaction_keeps_everything_that_matters(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_EVERY", 50)
    j = Journal(tmp_path / "j.jsonl")
    for i in range(200):
        j.record_jobs([(str(i), "accepted", dict(JOB, job_id=str(i)))])
        j.set_job(str(i), "sent")
        if i % 2:
            j.set_job(str(i), "delivered")
    ev = p.SmsReceived(event_id=j.next_event_id(), sender="+33612345678", text="kept", at=1.0)
    j.add_events([ev])
    j.close()
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert len(lines) < 200 * 3  # it was compacted along the way
    again = Journal(tmp_path / "j.jsonl")
    assert len(again.jobs) == 200
    assert again.state_of("1") == "delivered" and "job" not in again.jobs["1"]
    assert again.state_of("2") == "sent" and again.jobs["2"]["job"]["job_id"] == "2"  # report may still come
    assert [e.event_id for e in again.pending_events()] == [ev.event_id]


def test_a_torn_last_line_after_a_crash_is_skipped(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.record_jobs([("1", "accepted", JOB)])
    j.close()
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"t": "job", "id": "2", "sta')  # the process died mid-write
    again = Journal(tmp_path / "j.jsonl")
    assert again.state_of("1") == "accepted" and again.state_of("2") is None


async def test_a_job_recovered_as_sent_after_a_crash_still_gets_its_delivery_report(tmp_path):
    """A crash between the radio and the journal's "sent": at restart the radio
    log says it went, and the delivery report it asked for is still awaited."""
    from conftest import wait_until

    from device_agents.runtime import SENDING, AgentRuntime
    from device_agents.virtual.phone import RadioSettings, VirtualRadio

    job = dict(JOB, report=True)
    j = Journal(tmp_path / "j.jsonl")
    j.record_jobs([("1", "accepted", job)])
    j.set_job("1", SENDING)
    j.close()
    radio = VirtualRadio(device_id="d", radio_log=tmp_path / "radio.jsonl",
                         settings=RadioSettings(delivery_delay=0.05, delivery_reports=True))
    radio._transmit({"job_id": "1", "to": JOB["to"], "text": JOB["text"], "parts": 1})
    runtime = AgentRuntime(url="ws://127.0.0.1:9", device_id="d", token="t", backend=radio,
                           journal=Journal(tmp_path / "j.jsonl"))
    await runtime._recover()
    assert runtime.journal.state_of("1") == "sent"
    await wait_until(lambda: runtime.journal.state_of("1") == "delivered", what="the delivery report")
    states = [e.state for e in runtime.journal.pending_events() if isinstance(e, p.JobState)]
    assert states == ["sent", "delivered"]
    await runtime.aclose()
    radio.close()


def test_a_journal_keeps_its_id_and_a_new_one_gets_another(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_EVERY", 5)
    j = Journal(tmp_path / "j.jsonl")
    assert len(j.journal_id) == 16 and set(j.journal_id) <= p.JOURNAL_ID_CHARS
    for i in range(12):  # through compactions
        j.set_job(str(i), "accepted", job=dict(JOB, job_id=str(i)))
    j.close()
    assert Journal(tmp_path / "j.jsonl").journal_id == j.journal_id
    (tmp_path / "lost.jsonl").write_text("")  # an empty file is no journal yet
    others = {Journal(tmp_path / "k.jsonl").journal_id, Journal(tmp_path / "lost.jsonl").journal_id}
    assert j.journal_id not in others and len(others) == 2


def test_a_journal_written_before_ids_keeps_the_empty_id(tmp_path):
    """Its events stay keyed by device and event id alone, as the bridge stored them."""
    (tmp_path / "old.jsonl").write_text('{"t": "seq", "n": 7}\n')
    old = Journal(tmp_path / "old.jsonl")
    assert old.journal_id == "" and old.next_event_id() == "8"
    old.close()
    assert Journal(tmp_path / "old.jsonl").journal_id == ""


def test_records_are_written_as_the_json_encoder_writes_them():
    """The job-state and sequence records are formatted without the encoder:
    the same bytes, whatever the id (quotes, controls, any character)."""
    import json
    import random

    rng = random.Random(7)
    encode = json.JSONEncoder(ensure_ascii=False).encode
    records: list[dict] = [{"t": "seq", "n": 0}, {"t": "seq", "n": 123456789},
                           {"t": "job", "id": '1."\\\n\u00e9\u2028', "state": "sent", "at": 1e22},
                           {"t": "job", "id": "1", "state": "sent", "at": 5},  # an int time: the encoder's
                           {"t": "job", "id": "1", "state": "accepted", "at": 0.1, "job": JOB}]
    for _ in range(2000):
        job_id = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 12)))
        records.append({"t": "job", "id": job_id, "state": rng.choice(["sending", "sent", "delivered"]),
                        "at": rng.random() * 2e9})
    assert journal_module.lines(records) == "".join(encode(r) + "\n" for r in records)


def test_a_state_and_its_event_are_written_together_or_not_at_all(tmp_path):
    """A job's new state and the event telling it are one append: a file that
    takes only part of it (here a file-size limit, EFBIG, as a full disk gives
    ENOSPC) keeps neither, in the file or in memory; then both land together."""
    import resource
    import signal

    journal = Journal(tmp_path / "j.jsonl")
    journal.record_jobs([("1", p.JOB_ACCEPTED, JOB)])
    path = tmp_path / "j.jsonl"
    before = path.read_text()
    event = p.JobState(event_id=journal.next_event_id(), job_id="1", state=p.JOB_SENT, at=1.0)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before.encode()) + 60, limits[1]))
        with pytest.raises(OSError):
            journal.set_job_and_add_event("1", p.JOB_SENT, event)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert path.read_text() == before
    assert journal.state_of("1") == p.JOB_ACCEPTED and not journal.pending_events()

    journal.set_job_and_add_event("1", p.JOB_SENT, event)
    journal.close()
    added = path.read_text()[len(before):].splitlines()
    assert [line.split(",")[0] for line in added] == ['{"t": "job"', '{"t": "event"', '{"t": "seq"']
    again = Journal(path)
    assert again.state_of("1") == p.JOB_SENT
    assert [e.event_id for e in again.pending_events()] == [event.event_id]
    again.close()
