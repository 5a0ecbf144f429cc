"""Reading the phone's SMS and call-log providers as the shell user (pure code).

``adb shell content query`` runs as the shell user, which holds READ_SMS and
READ_CALL_LOG (AOSP ``packages/Shell/AndroidManifest.xml``), so the bridge
reads incoming messages and calls itself, with no helper process on the
phone. The output format is AOSP ``cmds/content/src/com/android/commands/
content/Content.java`` (``QueryCommand``): one ``Row: <n> <col>=<value>, …``
per row, ``n`` counting from 0, values printed as they are (``NULL`` for a
null, nothing escaped: a body may hold ``, `` or new lines), and
``No result found.`` when nothing matches.

Because nothing is escaped, the projection is fixed with the free text last:
a row is split on the known ``, <next column>=`` markers in order, and the
body takes the rest, new lines included, up to the next ``Row: <n+1> _id=``.
A body can still imitate that marker, so the reader also asks for the
``_id`` column alone (nothing free in it) and, when the two disagree, reads
the rows one by one (:func:`ids_match`).

Column meanings: AOSP ``frameworks/base/core/java/android/provider/
Telephony.java`` (``TextBasedSmsColumns``: ``type`` 1 inbox, 2 sent, 4 outbox,
5 failed, 6 queued; ``date`` in ms since the epoch, UTC) and
``CallLog.java`` (``Calls.TYPE``: 1 incoming, 2 outgoing, 3 missed,
4 voicemail, 5 rejected, 6 blocked, 7 answered elsewhere; ``date`` in ms,
``duration`` in s).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agents import protocol

SMS_URI = "content://sms"
INBOX_URI = "content://sms/inbox"
CALLS_URI = "content://call_log/calls"
# Free text last (address, then body): the numbers before them split cleanly.
INBOX_COLUMNS = ("_id", "date", "sub_id", "address", "body")
SENT_COLUMNS = ("_id", "date", "type", "status", "error_code", "address", "body")
CALL_COLUMNS = ("_id", "date", "duration", "type", "number")
ID_COLUMNS = ("_id",)

SMS_TYPE_SENT, SMS_TYPE_OUTBOX, SMS_TYPE_FAILED, SMS_TYPE_QUEUED = 2, 4, 5, 6
# CallLog.Calls.*_TYPE -> the protocol's direction; voicemail is not a call with someone.
CALL_TYPES = {1: "incoming", 2: "outgoing", 3: "missed", 5: "missed", 6: "missed", 7: "incoming"}

NO_RESULT = "No result found."


class ContentError(Exception):
    """``content query`` did not give rows (permission refused, bad URI, device error)."""


def query_argv(uri: str, columns: tuple[str, ...], where: str | None = None,
               sort: str = "_id ASC") -> list[str]:
    argv = ["content", "query", "--uri", uri, "--projection", ":".join(columns)]
    if where:
        argv += ["--where", where]
    return argv + ["--sort", sort]


def parse_rows(text: str, columns: tuple[str, ...], *, single: bool = False) -> list[dict[str, str | None]]:
    """Rows of ``content query`` output for this projection (last column takes the rest).
    ``single``: the query matched one row (``_id=N``), so nothing in it starts another."""
    stripped = text.strip()
    if not stripped or stripped == NO_RESULT:
        return []
    if not stripped.startswith("Row: 0 "):
        # e.g. "Error while accessing provider:…" or a SecurityException trace
        raise ContentError(" ".join(stripped.splitlines()[:2])[:300])
    first = re.escape(columns[0])
    rows: list[dict[str, str | None]] = []
    rest = text.lstrip()
    index = 0
    while rest:
        head = f"Row: {index} {columns[0]}="
        if not rest.startswith(head):
            raise ContentError(f"unexpected content query output near row {index}")
        body = rest[len(head):]
        nxt = None if single else re.search(rf"\nRow: {index + 1} {first}=", body)
        chunk, rest = (body[:nxt.start()], body[nxt.start() + 1:]) if nxt else (body, "")
        if not nxt and chunk.endswith("\n"):
            chunk = chunk[:-1]  # the row's own line end, not the text's
        row: dict[str, str | None] = {}
        for i, name in enumerate(columns):
            if i == len(columns) - 1:
                value = chunk
            else:
                marker = f", {columns[i + 1]}="
                cut = chunk.find(marker)
                if cut < 0:
                    raise ContentError(f"row {index}: column {columns[i + 1]!r} missing")
                value, chunk = chunk[:cut], chunk[cut + len(marker):]
            row[name] = None if value == "NULL" else value
        rows.append(row)
        index += 1
    return rows


def ids_match(rows: list[dict[str, str | None]], ids: list[dict[str, str | None]]) -> bool:
    return [r.get("_id") for r in rows] == [r.get("_id") for r in ids]


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@dataclass(frozen=True, slots=True)
class SmsRow:
    id: int
    address: str
    date_ms: int
    body: str
    type: int = 1
    status: int = -1
    error_code: int = 0
    sub_id: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, str | None]) -> SmsRow:
        sub = row.get("sub_id")
        return cls(id=_int(row.get("_id"), -1), address=row.get("address") or "",
                   date_ms=_int(row.get("date")), body=row.get("body") or "",
                   type=_int(row.get("type"), 1), status=_int(row.get("status"), -1),
                   error_code=_int(row.get("error_code")),
                   sub_id=_int(sub) if sub is not None else None)


@dataclass(frozen=True, slots=True)
class CallRow:
    id: int
    number: str
    date_ms: int
    duration_s: int
    type: int

    @classmethod
    def from_row(cls, row: dict[str, str | None]) -> CallRow:
        return cls(id=_int(row.get("_id"), -1), number=row.get("number") or "",
                   date_ms=_int(row.get("date")), duration_s=_int(row.get("duration")),
                   type=_int(row.get("type")))


def sms_event(row: SmsRow) -> protocol.SmsReceived:
    # The id says what the event is: reported again after a crash, the bridge drops the copy.
    return protocol.SmsReceived(event_id=f"sms-{row.id}-{row.date_ms}", sender=(row.address or "unknown")[:32],
                                text=row.body[:protocol.MAX_TEXT], at=row.date_ms / 1000.0)


def call_event(row: CallRow, job_id: str | None = None) -> protocol.CallEvent | None:
    direction = CALL_TYPES.get(row.type)
    if direction is None:
        return None
    # An empty number is a withheld caller (CallLog.Calls.PRESENTATION_RESTRICTED).
    return protocol.CallEvent(event_id=f"call-{row.id}-{row.date_ms}", direction=direction,
                              number=(row.number.strip() or "private")[:32], at=row.date_ms / 1000.0,
                              duration_s=0.0 if direction == "missed" else float(row.duration_s),
                              job_id=job_id)


@dataclass(frozen=True, slots=True)
class Mark:
    """How far one provider has been read: the highest ``_id`` and ``date`` seen.

    ``_id`` alone is not enough: the SMS and call tables use ``INTEGER PRIMARY
    KEY`` without AUTOINCREMENT (AOSP ``MmsSmsDatabaseHelper``,
    ``CallLogDatabaseHelper``), so deleting the newest row lets the next one
    take its id again, and clearing the app's data starts over from 1. A
    row is new when its ``_id`` or its ``date`` is above the mark.
    """

    id: int = -1
    date_ms: int = -1

    def where(self) -> str:
        return f"_id>{self.id} OR date>{self.date_ms}"

    def after(self, rows: list[Any]) -> Mark:
        return Mark(max([self.id, *(r.id for r in rows)]), max([self.date_ms, *(r.date_ms for r in rows)]))


class Position:
    """Where reading stopped, per phone, kept in the data dir (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inbox: Mark | None = None
        self.calls: Mark | None = None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        for name in ("inbox", "calls"):
            value = data.get(name) if isinstance(data, dict) else None
            if isinstance(value, dict):
                setattr(self, name, Mark(int(value.get("id", -1)), int(value.get("date_ms", -1))))

    def save(self) -> None:
        data = {name: {"id": m.id, "date_ms": m.date_ms}
                for name, m in (("inbox", self.inbox), ("calls", self.calls)) if m is not None}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
