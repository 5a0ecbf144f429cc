"""The agent's own durable memory: its job ledger and its event outbox.

One append-only JSON-lines file per agent. Every change is a line, written
and flushed before the agent acts on it, so that a killed agent (or phone)
comes back knowing every job it has seen and every event the bridge has not
acked yet. On open the file is replayed and rewritten compactly.

Pure standard library: the Android helper uses it under Termux's Python.

Every journal has an id, made at random when its file is first created and
kept in it: the agent sends it in ``hello``, and the bridge keys the agent's
events by (device, journal id, event id), so that a phone whose journal was
lost (reinstalled, replaced) and whose event ids start again at 1 is told
apart from the one before. A file written before journals had ids keeps the
empty id (its events stay keyed as they were).

Records::

    {"t": "journal", "id": JOURNAL_ID}                  (first line)
    {"t": "job", "id": JOB_ID, "state": STATE, "at": T, "job": {...}?}
    {"t": "event", "e": {...event...}}
    {"t": "ack", "ids": [EVENT_ID, ...]}
    {"t": "seq", "n": N}
    {"t": "ledger", "jobs": [[JOB_ID, STATE, T], ...]}   (settled jobs, written by compaction)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from json.encoder import encode_basestring as _string
from typing import Any, TextIO

from . import protocol

log = logging.getLogger(__name__)

# Ledger entries are kept this long after their last change, so that a job
# the bridge pushes again after a long outage is still recognised.
LEDGER_RETENTION_S = 7 * 86400
# At most this many ledger entries are kept; settled ones beyond it are dropped
# oldest first as they come, not only at compaction, so that an agent's memory
# stays flat (an entry costs ~370 bytes, and the daemon runs its modems' and
# virtual phones' agents). Jobs still in hand are never dropped, and a settled
# job matters only until its event is acked (then the bridge never pushes it
# again): with a credit window of a few jobs, 1,000 is a wide margin.
LEDGER_MAX = 1_000
COMPACT_EVERY = 20_000  # records appended before the file is rewritten
# Final states whose job body is no longer needed ("sent" keeps it: a delivery
# report may still be due, and a restart resumes waiting for it).
_SETTLED = frozenset({"delivered", "failed", "rejected"})
# One encoder for every record (json.dumps with options builds a new one each call).
_encode = json.JSONEncoder(ensure_ascii=False).encode
_JOB_KEYS = ("t", "id", "state", "at")


def _line(rec: dict[str, Any]) -> str:
    """One record as one line of JSON. The two written for every job and event
    (a job's new state, the event sequence) are formatted directly, as the
    encoder writes them (the same bytes), at a third of its cost."""
    t = rec.get("t")
    if t == "job" and tuple(rec) == _JOB_KEYS and type(rec["at"]) is float and math.isfinite(rec["at"]):
        return f'{{"t": "job", "id": {_string(rec["id"])}, "state": {_string(rec["state"])}, "at": {rec["at"]!r}}}\n'
    if t == "seq" and len(rec) == 2 and type(rec.get("n")) is int:
        return f'{{"t": "seq", "n": {rec["n"]}}}\n'
    return _encode(rec) + "\n"


def lines(records: Iterable[dict[str, Any]]) -> str:
    """``records`` as journal lines, one JSON object each."""
    return "".join([_line(r) for r in records])


def new_journal_id() -> str:
    """A journal's id: 64 random bits, lowercase hex (``protocol.Hello.journal``)."""
    return secrets.token_hex(8)


class Journal:
    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        # job id -> {"state":…, "at":…, "job": {...} (while not final)}
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.outbox: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.seq = 0
        # "" until read from the file; a new file gets a fresh one (see the module's doc).
        self.journal_id = ""
        self._appended = 0
        self._file: TextIO | None = None
        self._size: int | None = None  # the file's size after our last append (None: ask the file)
        if not self._load():  # no file, or nothing in it: a new journal
            self.journal_id = new_journal_id()
        self._compact()

    # -- replay --------------------------------------------------------

    def _load(self) -> bool:
        """Replay the file; whether it held any record."""
        try:
            f = open(self.path, encoding="utf-8")  # noqa: SIM115 - closed by the `with f` below
        except FileNotFoundError:
            return False
        read = False
        with f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn last line after a crash
                self._apply(rec)
                read = True
        return read

    def _apply(self, rec: dict[str, Any]) -> None:
        t = rec.get("t")
        if t == "job":
            entry = self.jobs.pop(rec["id"], {})
            entry["state"] = rec["state"]
            entry["at"] = rec.get("at", 0.0)
            if "job" in rec:
                entry["job"] = rec["job"]
            if rec["state"] in _SETTLED:
                entry.pop("job", None)  # nothing left to do with it: keep the ledger small
            if "detail" in rec:
                entry["detail"] = rec["detail"]
            self.jobs[rec["id"]] = entry
            if len(self.jobs) > LEDGER_MAX + LEDGER_MAX // 10:
                self._trim()
        elif t == "ledger":
            for job_id, state, at in rec["jobs"]:
                self.jobs.pop(job_id, None)
                self.jobs[job_id] = {"state": state, "at": at}
        elif t == "event":
            self.outbox[rec["e"]["event_id"]] = rec["e"]
        elif t == "ack":
            for i in rec["ids"]:
                self.outbox.pop(i, None)
        elif t == "seq":
            self.seq = max(self.seq, rec["n"])
        elif t == "journal":
            self.journal_id = str(rec["id"])

    def _trim(self) -> None:
        """Drop the oldest settled entries down to LEDGER_MAX (jobs still in hand stay)."""
        excess = len(self.jobs) - LEDGER_MAX
        for job_id in [j for j, e in itertools.islice(self.jobs.items(), 2 * excess) if "job" not in e][:excess]:
            del self.jobs[job_id]

    def _compact(self) -> None:
        cutoff = time.time() - LEDGER_RETENTION_S
        while self.jobs and len(self.jobs) > LEDGER_MAX:
            self.jobs.popitem(last=False)
        for job_id in [j for j, e in self.jobs.items() if e["at"] < cutoff]:
            del self.jobs[job_id]
        tmp = self.path + ".tmp"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            if self.journal_id:
                f.write(json.dumps({"t": "journal", "id": self.journal_id}) + "\n")
            f.write(json.dumps({"t": "seq", "n": self.seq}) + "\n")
            # Settled jobs (the most) in one record: one dumps, not thousands.
            bare = [[job_id, e["state"], e["at"]] for job_id, e in self.jobs.items()
                    if "job" not in e and "detail" not in e]
            f.write(json.dumps({"t": "ledger", "jobs": bare}, ensure_ascii=False) + "\n")
            for job_id, e in self.jobs.items():
                if "job" not in e and "detail" not in e:
                    continue
                rec = {"t": "job", "id": job_id, "state": e["state"], "at": e["at"]}
                for key in ("job", "detail"):
                    if key in e:
                        rec[key] = e[key]
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            for ev in self.outbox.values():
                f.write(json.dumps({"t": "event", "e": ev}, ensure_ascii=False) + "\n")
            for rec in self._extra_records():
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            if self.fsync:  # as durable as the appends, no more (the virtual phone's are not)
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.fsync:  # the rename itself, durable
            dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - the journal's append handle
        self._size = None
        self._appended = 0

    def _extra_records(self) -> list[dict[str, Any]]:
        """Records a subclass keeps in the file besides jobs and events
        (written last by compaction; its ``_apply`` reads them back)."""
        return []

    # -- writing ---------------------------------------------------------

    def _write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records``, all or nothing: a write the disk refuses (full,
        read-only) raises OSError and leaves the file as it was, so that the
        caller may try the same again later."""
        data = lines(records)
        if not data:
            return
        self._append(data, sync=self.fsync)
        self._appended += data.count("\n")
        self._maybe_compact()

    def _append(self, data: str, *, sync: bool) -> None:
        """Append whole lines, all or nothing: OSError leaves the file as it was."""
        if self._file is None:
            raise RuntimeError(f"journal {self.path} is closed")
        fd = self._file.fileno()
        size = self._size
        if size is None:
            self._file.flush()  # anything a subclass wrote through it, first
            size = os.fstat(fd).st_size
        raw = data.encode()
        try:
            written = os.write(fd, raw)  # O_APPEND: each write lands at the end
            if written < len(raw):
                view = memoryview(raw)[written:]
                while view:
                    view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        except OSError:
            self._size = None  # asked again next time, should the truncation below fail
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # no torn line left behind (shrinking needs no room)
            raise
        self._size = size + len(raw)

    def _maybe_compact(self) -> None:
        if self._appended >= COMPACT_EVERY:
            try:
                self._compact()
            except OSError as exc:  # the append is done; compaction is tried again later
                self._appended = COMPACT_EVERY // 2
                with contextlib.suppress(OSError):
                    os.unlink(self.path + ".tmp")
                log.warning("journal %s: not compacted (%s); it will be tried again", self.path, exc)

    def probe(self) -> None:
        """A small real write (the event sequence): OSError while the disk refuses."""
        self._write([{"t": "seq", "n": self.seq}])

    def record_jobs(self, updates: Iterable[tuple[str, str, dict[str, Any] | None]], *,
                    detail: dict[str, Any] | None = None) -> None:
        """Set the ledger state of jobs: (job_id, state, job-json or None)."""
        now = time.time()
        records = []
        for job_id, state, job in updates:
            rec: dict[str, Any] = {"t": "job", "id": job_id, "state": state, "at": now}
            if job is not None:
                rec["job"] = job
            if detail is not None:
                rec["detail"] = detail
            records.append(rec)
        self._write(records)  # first: memory never runs ahead of the file
        for rec in records:
            self._apply(rec)

    def set_job(self, job_id: str, state: str, *, job: dict[str, Any] | None = None,
                detail: dict[str, Any] | None = None) -> None:
        self.record_jobs([(job_id, state, job)], detail=detail)

    def set_job_and_add_event(self, job_id: str, state: str, event: protocol.Event) -> None:
        """A job's new state and the event that tells it, in one write: both or
        neither (OSError), then in memory."""
        rec: dict[str, Any] = {"t": "job", "id": job_id, "state": state, "at": time.time()}
        ev = protocol.event_to_json(event)
        self._write([rec, {"t": "event", "e": ev}, {"t": "seq", "n": self.seq}])
        self._apply(rec)
        self.outbox[ev["event_id"]] = ev

    def next_event_id(self) -> str:
        self.seq += 1
        return f"{self.seq}"

    def add_events(self, events: Iterable[protocol.Event]) -> list[protocol.Event]:
        """Put events in the outbox (durably) before anything is sent."""
        events = list(events)
        records: list[dict[str, Any]] = [{"t": "event", "e": protocol.event_to_json(ev)} for ev in events]
        records.append({"t": "seq", "n": self.seq})
        self._write(records)
        for rec in records[:-1]:
            self.outbox[rec["e"]["event_id"]] = rec["e"]
        return events

    def ack(self, event_ids: Iterable[str]) -> None:
        ids = [i for i in event_ids if i in self.outbox]
        if not ids:
            return
        self._write([{"t": "ack", "ids": ids}])
        for i in ids:
            del self.outbox[i]

    # -- reading ---------------------------------------------------------

    def state_of(self, job_id: str) -> str | None:
        entry = self.jobs.get(job_id)
        return entry["state"] if entry else None

    def attempt_of(self, job_id: str) -> int | None:
        """The dispatch of the job last pushed (``protocol.SendSms.attempt``), while it is in hand."""
        entry = self.jobs.get(job_id)
        job = entry.get("job") if entry else None
        attempt = job.get("attempt") if isinstance(job, dict) else None
        return attempt if isinstance(attempt, int) else None

    def ledger(self) -> tuple[protocol.LedgerEntry, ...]:
        return tuple(protocol.LedgerEntry(job_id=j, state=e["state"]) for j, e in self.jobs.items())

    def pending_events(self) -> list[protocol.Event]:
        return [protocol.event_from_json(e) for e in self.outbox.values()]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
