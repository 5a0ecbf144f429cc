"""The records on SQLite (:class:`bridge.store.protocols.Records`): inbound
SMS, call events, call notes, contacts, opt-outs, tracked links and clicks,
and the message list that reads jobs and inbound SMS together."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.core import jobstates as js
from bridge.core import numbers
from bridge.core.optout import OPT_OUT, Keywords
from bridge.store import paging, shaping
from bridge.store.model import Contact, Link, parse_job_id
from bridge.store.sqlite.base import IN_CHUNK, SqliteBase, marks
from bridge.store.sqlite.recorder import EventRecorder
from device_agents import protocol
from device_agents.common import mask_number

log = logging.getLogger(__name__)


# -- what devices report besides job states (written by apply_events' transaction) --

def store_report(db: sqlite3.Connection, recorder: EventRecorder, keywords: Keywords, region: str | None,
                 account: str, device_id: str, ev: protocol.Event, now: float) -> None:
    """Record an inbound SMS, a call event or a call note, and raise its webhook event."""
    if isinstance(ev, protocol.SmsReceived):
        cur = db.execute("INSERT INTO inbound_sms (account, device_id, sender, text, received_at, stored_at, "
                         "sim, incomplete) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (account, device_id, ev.sender, ev.text, ev.at, now, ev.sim, int(ev.incomplete)))
        recorder.record(db, *shaping.report_event(account, device_id, ev, cur.lastrowid), now)
        _opt_keyword(db, keywords, region, account, ev.sender, ev.text, now)
    elif isinstance(ev, protocol.CallEvent):
        parsed = parse_job_id(ev.job_id)
        job_id = parsed[0] if parsed is not None else None
        cur = db.execute("INSERT INTO call_events (account, device_id, direction, number, started_at, "
                         "duration_s, job_id, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (account, device_id, ev.direction, ev.number, ev.at, ev.duration_s, job_id, now))
        recorder.record(db, *shaping.report_event(account, device_id, ev, cur.lastrowid), now)
    elif isinstance(ev, protocol.CallNote):
        db.execute("INSERT INTO call_notes (account, device_id, number, text, source, at) "
                   "VALUES (?, ?, ?, ?, 'mobile', ?)", (account, device_id, ev.number, ev.text, ev.at))
        recorder.record(db, *shaping.report_event(account, device_id, ev, None), now)


def _opt_keyword(db: sqlite3.Connection, keywords: Keywords, region: str | None, account: str, sender: str,
                 text: str, now: float) -> None:
    """An incoming SMS that is a stop (start) word opts its sender out (in)."""
    action = keywords.classify(text)
    if action is None:
        return
    number = numbers.normalise_or_keep(sender, region)
    if action == OPT_OUT:
        db.execute("INSERT INTO opt_outs (account, phone_number, at, keyword) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (account, phone_number) DO UPDATE SET at = excluded.at, "
                   "keyword = excluded.keyword", (account, number, now, text.strip()[:64]))
    else:
        db.execute("DELETE FROM opt_outs WHERE account = ? AND phone_number = ?", (account, number))
    log.info("account %s: %s opted %s", account, mask_number(number), "out" if action == OPT_OUT else "in")


_OUT_SELECT = ("SELECT 'out' AS direction, j.id_sms_api AS id, j.id AS job_id, j.id_sms_api, j.phone_number, "
               "j.message AS text, "
               "j.state AS status, j.reason, j.created, j.due, j.updated, j.priority, j.parts, j.encoding, "
               "j.device_id, j.attempts, (SELECT MIN(h.at) FROM job_history AS h WHERE h.job_id = j.id "
               f"AND h.state = '{js.SENT}') AS sent_at, j.id AS rowid_ FROM jobs AS j "
               "WHERE j.account = ? AND j.kind = 'sms'")
_IN_SELECT = ("SELECT 'in' AS direction, 'in_' || i.id AS id, i.id AS inbound_id, NULL AS id_sms_api, "
              "i.sender AS phone_number, "
              "i.text, 'received' AS status, NULL AS reason, i.stored_at AS created, NULL AS due, "
              "i.stored_at AS updated, NULL AS priority, NULL AS parts, NULL AS encoding, i.device_id, "
              "NULL AS attempts, NULL AS sent_at, i.received_at, i.incomplete, i.id AS rowid_ "
              "FROM inbound_sms AS i "
              "WHERE i.account = ?")


class SqliteRecords(SqliteBase):
    def set_opt_out(self, keywords: Keywords, default_region: str | None = None) -> None:
        self._keywords = keywords
        self._region = default_region

    async def opted_out(self, account: str, numbers: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(numbers))
        if not wanted:
            return set()
        return await self._read(self._opted_out, account, wanted)

    def _opted_out(self, account: str, wanted: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[i:i + IN_CHUNK]
            rows = self._conn.execute(f"SELECT phone_number FROM opt_outs WHERE account = ? AND phone_number "
                                      f"IN ({marks(len(chunk))})", (account, *chunk)).fetchall()
            found.update(r[0] for r in rows)
        return found

    # -- contacts -------------------------------------------------------------------

    async def upsert_contacts(self, account: str, contacts: list[Contact]) -> list[bool]:
        return await self._run(self._tx(self._upsert_contacts), account, contacts)

    def _upsert_contacts(self, db: sqlite3.Connection, account: str, contacts: list[Contact]) -> list[bool]:
        now = time.time()
        created = []
        for c in contacts:
            cur = db.execute(
                "INSERT INTO contacts (account, phone_number, firstname, lastname, email, address, country_code, "
                "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, phone_number) DO NOTHING",
                (account, c.phone_number, c.firstname, c.lastname, c.email, c.address, c.country_code, now, now))
            if cur.rowcount == 1:
                created.append(True)
                continue
            # An update keeps what the request leaves out (an empty field).
            db.execute("UPDATE contacts SET firstname = COALESCE(NULLIF(?, ''), firstname), "
                       "lastname = COALESCE(NULLIF(?, ''), lastname), email = COALESCE(NULLIF(?, ''), email), "
                       "address = COALESCE(NULLIF(?, ''), address), "
                       "country_code = COALESCE(NULLIF(?, ''), country_code), updated = ? "
                       "WHERE account = ? AND phone_number = ?",
                       (c.firstname, c.lastname, c.email, c.address, c.country_code, now, account, c.phone_number))
            created.append(False)
        return created

    async def contacts(self, account: str, limit: int = 1000) -> list[Contact]:
        rows = await self._read(self._select_dicts,
                               "SELECT phone_number, firstname, lastname, email, address, country_code "
                               "FROM contacts WHERE account = ? ORDER BY created, phone_number LIMIT ?",
                               (account, limit))
        return [Contact(**r) for r in rows]

    # -- tracked links ---------------------------------------------------------------

    async def click(self, code: str, *, user_agent: str | None = None, ip: str | None = None) -> Link | None:
        return await self._run(self._tx(self._click), code, user_agent, ip)

    def _click(self, db: sqlite3.Connection, code: str, user_agent: str | None, ip: str | None) -> Link | None:
        row = db.execute("SELECT code, account, id_sms_api, phone_number, url, created FROM links WHERE code = ?",
                         (code,)).fetchone()
        if row is None:
            return None
        now = time.time()
        db.execute("INSERT INTO clicks (code, at, user_agent, ip) VALUES (?, ?, ?, ?)",
                   (code, now, (user_agent or "")[:512] or None, ip))
        count = db.execute("SELECT COUNT(*) FROM clicks WHERE code = ?", (code,)).fetchone()[0]
        link = Link(row[0], row[1], row[2], row[3], row[4], row[5], count)
        self._recorder.record(db, *shaping.click_event(link, code, now), now)
        return link

    async def link(self, code: str) -> Link | None:
        rows = await self._read(self._select_dicts,
                               "SELECT l.code, l.account, l.id_sms_api, l.phone_number, l.url, l.created, "
                               "(SELECT COUNT(*) FROM clicks AS k WHERE k.code = l.code) AS clicks "
                               "FROM links AS l WHERE l.code = ?", (code,))
        return Link(**rows[0]) if rows else None

    async def links(self, account: str, id_sms_api: str) -> list[Link]:
        rows = await self._read(self._select_dicts,
                               "SELECT l.code, l.account, l.id_sms_api, l.phone_number, l.url, l.created, "
                               "(SELECT COUNT(*) FROM clicks AS k WHERE k.code = l.code) AS clicks "
                               "FROM links AS l WHERE l.account = ? AND l.id_sms_api = ? ORDER BY l.created",
                               (account, id_sms_api))
        return [Link(**r) for r in rows]

    # -- calls and notes ---------------------------------------------------------------

    async def add_call_note(self, account: str, number: str, text: str, *, source: str = "interface") -> int:
        return await self._run(self._tx(self._add_call_note), account, number, text, source)

    def _add_call_note(self, db: sqlite3.Connection, account: str, number: str, text: str, source: str) -> int:
        now = time.time()
        cur = db.execute("INSERT INTO call_notes (account, device_id, number, text, source, at) "
                         "VALUES (?, NULL, ?, ?, ?, ?)", (account, number, text, source, now))
        self._recorder.record(db, *shaping.note_event(account, number, text, now, source, None), now)
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def calls(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._read(self._select_dicts,
                               "SELECT id, device_id, direction, number, started_at, duration_s, job_id "
                               "FROM call_events WHERE account = ? ORDER BY id DESC LIMIT ?", (account, limit))

    # -- messages ----------------------------------------------------------------------

    async def last_activity(self, account: str) -> float:
        return await self._read(self._last_activity, account)

    def _last_activity(self, account: str) -> float:
        row = self._conn.execute("SELECT MAX(COALESCE((SELECT MAX(updated) FROM jobs WHERE account = ?), 0), "
                                 "COALESCE((SELECT MAX(stored_at) FROM inbound_sms WHERE account = ?), 0))",
                                 (account, account)).fetchone()
        return float(row[0])

    async def inbound(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._read(self._select_dicts,
                               "SELECT id, device_id, sender, text, received_at, incomplete FROM inbound_sms "
                               "WHERE account = ? ORDER BY id DESC LIMIT ?", (account, limit))

    async def get_inbound(self, account: str, inbound_id: int) -> dict[str, Any] | None:
        rows = await self._read(self._select_dicts, _IN_SELECT + " AND i.id = ?", (account, inbound_id))
        if not rows:
            return None
        rows[0].pop("rowid_")
        return rows[0]

    async def messages(self, account: str, *, direction: str | None = None,
                       status: str | Sequence[str] | None = None, take: int = 50,
                       skip: int = 0, cursor: str | None = None) -> list[dict[str, Any]]:
        after = paging.parse_cursor(cursor) if cursor else None
        return await self._read(self._messages, account, direction, status, take, skip, after)

    def _messages(self, account: str, direction: str | None, status: str | Sequence[str] | None, take: int,
                  skip: int, after: paging.Key | None) -> list[dict[str, Any]]:
        scope = shaping.message_scope(direction, status)
        if scope is None:
            return []
        # The keys first (index walks), then the rows of the page only.
        statement, params = paging.keys_sql(account, outgoing=scope.outgoing, inbound=scope.inbound,
                                            states=scope.states, after=after, take=take, skip=skip)
        chosen = [paging.Key(c, d, i) for c, d, i in self._conn.execute(statement, params)]
        found: dict[tuple[str, int], dict[str, Any]] = {}
        out_ids = [k.id for k in chosen if k.direction == paging.OUT]
        in_ids = [k.id for k in chosen if k.direction == paging.IN]
        if out_ids:
            for row in self._select_dicts(_OUT_SELECT + f" AND j.id IN ({marks(len(out_ids))})",
                                          (account, *out_ids)):
                found[(paging.OUT, row.pop("rowid_"))] = row
        if in_ids:
            for row in self._select_dicts(_IN_SELECT + f" AND i.id IN ({marks(len(in_ids))})", (account, *in_ids)):
                found[(paging.IN, row.pop("rowid_"))] = row
        return shaping.message_page(chosen, found)
