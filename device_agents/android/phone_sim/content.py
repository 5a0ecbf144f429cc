"""``content query`` on the SMS and call-log providers, as the shell user runs it.

Sources: AOSP ``cmds/content/src/com/android/commands/content/Content.java``
(``--uri``, ``--projection a:b:c``, ``--where``, ``--sort``; rows printed as
``Row: N key=value, key=value`` with ``NULL`` for null; ``No result found.``
when empty; failures printed as ``Error while accessing provider:NAME`` + the
exception, the command still ending normally), ``SmsProvider.java``
(content://sms, /inbox /sent /draft /outbox /failed /queued, /N; default order
``date DESC``) and ``CallLogProvider.java`` (content://call_log/calls).
The shell user holds READ_SMS and READ_CALL_LOG (packages/Shell/AndroidManifest.xml).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from .shell import Io
from .state import CALL_COLUMNS, SMS_COLUMNS, PhoneState


class ContentCommand:
    def __init__(self, state: PhoneState) -> None:
        self.state = state

    async def content(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2 or argv[1] != "query":
            io.err("usage: adb shell content [subcommand] [options]\n")
            return 1 if len(argv) < 2 else 0
        opts: dict[str, str] = {}
        i = 2
        while i < len(argv):
            if argv[i] in ("--uri", "--projection", "--where", "--sort", "--user") and i + 1 < len(argv):
                opts[argv[i][2:]] = argv[i + 1]
                i += 2
            else:
                io.err(f"Error: Unknown argument: {argv[i]}\n")
                return 1
        uri = opts.get("uri")
        if not uri:
            io.err("Error: Content provider URI not specified\n")
            return 1
        m = re.match(r"content://([^/]+)(/.*)?$", uri)
        if not m:
            io.err(f"Error while accessing provider:{uri}\njava.lang.IllegalArgumentException: "
                   f"Invalid URI: {uri}\n")
            return 0
        authority, path = m.group(1), (m.group(2) or "").strip("/")
        table = self._provider(authority, path)
        if table is None:
            io.err(f"Error while accessing provider:{authority}\njava.lang.IllegalStateException: "
                   f"Could not find provider: {authority}\n\tat com.android.commands.content."
                   "Content$Command.execute(Content.java)\n")
            return 0
        columns, rows, fixed_where = table
        projection = opts["projection"].split(":") if "projection" in opts else list(columns)
        try:
            out = _query(columns, rows, projection, opts.get("where"), fixed_where, opts.get("sort"))
        except sqlite3.Error as exc:
            io.err(f"Error while accessing provider:{authority}\nandroid.database.sqlite."
                   f"SQLiteException: {exc} (code 1 SQLITE_ERROR)\n")
            return 0
        if not out:
            io.out("No result found.\n")
            return 0
        for n, row in enumerate(out):
            io.out(f"Row: {n} " + ", ".join(f"{k}={_cell(v)}" for k, v in row) + "\n")
        return 0

    def _provider(self, authority: str, path: str
                  ) -> tuple[tuple[str, ...], list[dict[str, Any]], str | None] | None:
        # Telephony.Sms URIs (SmsProvider.java): content://sms, /inbox /sent /draft /outbox
        # /failed /queued, /N; CallLog.Calls: content://call_log/calls.
        with self.state.lock:
            if authority == "sms":
                boxes = {"": None, "inbox": "type=1", "sent": "type=2", "draft": "type=3",
                         "outbox": "type=4", "failed": "type=5", "queued": "type=6"}
                if path in boxes:
                    return SMS_COLUMNS, [dict(r) for r in self.state.sms], boxes[path]
                if path.isdigit():
                    return SMS_COLUMNS, [dict(r) for r in self.state.sms], f"_id={int(path)}"
                return None
            if authority == "call_log" and path in ("calls", ""):
                return CALL_COLUMNS, [dict(r) for r in self.state.calls], None
        return None


def _cell(value: Any) -> str:
    # QueryCommand: NULL for null, longs and strings as they are.
    return "NULL" if value is None else str(value)


def _query(columns: tuple[str, ...], rows: list[dict[str, Any]], projection: list[str],
           where: str | None, fixed_where: str | None, sort: str | None) -> list[list[tuple[str, Any]]]:
    """The provider's SQL, run by SQLite as SmsProvider / CallLogProvider run theirs."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE TABLE t ({', '.join(columns)})")
        db.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in columns)})",
                       [tuple(r.get(c) for c in columns) for r in rows])
        clauses = [c for c in (fixed_where, where) if c]
        sql = f"SELECT {', '.join(projection)} FROM t"
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        # SmsProvider's default order is "date DESC"; CallLogProvider's too.
        sql += f" ORDER BY {sort}" if sort else " ORDER BY date DESC"
        cur = db.execute(sql)
        names = [d[0] for d in cur.description]
        return [list(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        db.close()
