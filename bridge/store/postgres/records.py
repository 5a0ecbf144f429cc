"""The records on PostgreSQL (:class:`bridge.store.protocols.Records`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bridge.core import jobstates as js
from bridge.core import numbers
from bridge.core.optout import OPT_OUT, Keywords
from bridge.store import paging, shaping
from bridge.store.model import Contact, Link, parse_job_id
from bridge.store.postgres.base import PgBase, sql
from bridge.store.postgres.recorder import Batch
from device_agents import protocol
from device_agents.common import mask_number

log = logging.getLogger(__name__)


async def store_report(conn: asyncpg.Connection, batch: Batch, keywords: Keywords, region: str | None,
                       account: str, device_id: str, ev: protocol.Event, now: float) -> None:
    """Record an inbound SMS, a call event or a call note, and raise its webhook event."""
    if isinstance(ev, protocol.SmsReceived):
        inbound_id = await conn.fetchval(
            sql("INSERT INTO inbound_sms (account, device_id, sender, text, received_at, stored_at, "
                "sim, incomplete) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"),
            account, device_id, ev.sender, ev.text, ev.at, now, ev.sim, int(ev.incomplete))
        batch.record(*shaping.report_event(account, device_id, ev, inbound_id), now)
        await _opt_keyword(conn, keywords, region, account, ev.sender, ev.text, now)
    elif isinstance(ev, protocol.CallEvent):
        parsed = parse_job_id(ev.job_id)
        job_id = parsed[0] if parsed is not None else None
        call_id = await conn.fetchval(
            sql("INSERT INTO call_events (account, device_id, direction, number, started_at, "
                "duration_s, job_id, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"),
            account, device_id, ev.direction, ev.number, ev.at, ev.duration_s, job_id, now)
        batch.record(*shaping.report_event(account, device_id, ev, call_id), now)
    elif isinstance(ev, protocol.CallNote):
        await conn.execute(sql("INSERT INTO call_notes (account, device_id, number, text, source, at) "
                               "VALUES (?, ?, ?, ?, 'mobile', ?)"), account, device_id, ev.number, ev.text, ev.at)
        batch.record(*shaping.report_event(account, device_id, ev, None), now)


async def _opt_keyword(conn: asyncpg.Connection, keywords: Keywords, region: str | None, account: str,
                       sender: str, text: str, now: float) -> None:
    action = keywords.classify(text)
    if action is None:
        return
    number = numbers.normalise_or_keep(sender, region)
    if action == OPT_OUT:
        await conn.execute("INSERT INTO opt_outs (account, phone_number, at, keyword) VALUES ($1, $2, $3, $4) "
                           "ON CONFLICT (account, phone_number) DO UPDATE SET at = excluded.at, "
                           "keyword = excluded.keyword", account, number, now, text.strip()[:64])
    else:
        await conn.execute("DELETE FROM opt_outs WHERE account = $1 AND phone_number = $2", account, number)
    log.info("account %s: %s opted %s", account, mask_number(number), "out" if action == OPT_OUT else "in")


_OUT_SELECT = ("SELECT 'out' AS direction, j.id_sms_api AS id, j.id AS job_id, j.id_sms_api, j.phone_number, "
               "j.message AS text, "
               "j.state AS status, j.reason, j.created, j.due, j.updated, j.priority, j.parts, j.encoding, "
               "j.device_id, j.attempts, (SELECT MIN(h.at) FROM job_history AS h WHERE h.job_id = j.id "
               f"AND h.state = '{js.SENT}') AS sent_at, j.id AS rowid_ FROM jobs AS j "
               "WHERE j.account = ? AND j.kind = 'sms'")
_IN_SELECT = ("SELECT 'in' AS direction, 'in_' || i.id AS id, i.id AS inbound_id, NULL AS id_sms_api, "
              "i.sender AS phone_number, "
              "i.text, 'received' AS status, NULL AS reason, i.stored_at AS created, NULL::float8 AS due, "
              "i.stored_at AS updated, NULL::bigint AS priority, NULL::bigint AS parts, NULL AS encoding, "
              "i.device_id, NULL::bigint AS attempts, NULL::float8 AS sent_at, i.received_at, i.incomplete, "
              "i.id AS rowid_ "
              "FROM inbound_sms AS i WHERE i.account = ?")


class PgRecords(PgBase):
    def set_opt_out(self, keywords: Keywords, default_region: str | None = None) -> None:
        self._keywords = keywords
        self._region = default_region

    async def opted_out(self, account: str, numbers: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(numbers))
        if not wanted:
            return set()
        rows = await self._fetch_dicts("SELECT phone_number FROM opt_outs WHERE account = $1 "
                                       "AND phone_number = ANY($2::text[])", account, wanted)
        return {r["phone_number"] for r in rows}

    async def upsert_contacts(self, account: str, contacts: list[Contact]) -> list[bool]:
        now = time.time()
        created = []
        async with self._tx() as conn:
            for c in contacts:
                new = await conn.fetchval(
                    "INSERT INTO contacts (account, phone_number, firstname, lastname, email, address, country_code, "
                    "created, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) "
                    "ON CONFLICT (account, phone_number) DO UPDATE SET "
                    "firstname = COALESCE(NULLIF(excluded.firstname, ''), contacts.firstname), "
                    "lastname = COALESCE(NULLIF(excluded.lastname, ''), contacts.lastname), "
                    "email = COALESCE(NULLIF(excluded.email, ''), contacts.email), "
                    "address = COALESCE(NULLIF(excluded.address, ''), contacts.address), "
                    "country_code = COALESCE(NULLIF(excluded.country_code, ''), contacts.country_code), "
                    "updated = excluded.updated RETURNING (xmax = 0)",
                    account, c.phone_number, c.firstname, c.lastname, c.email, c.address, c.country_code, now)
                created.append(bool(new))
        return created

    async def contacts(self, account: str, limit: int = 1000) -> list[Contact]:
        rows = await self._fetch_dicts("SELECT phone_number, firstname, lastname, email, address, country_code "
                                       "FROM contacts WHERE account = $1 ORDER BY created, phone_number LIMIT $2",
                                       account, limit)
        return [Contact(**r) for r in rows]

    async def click(self, code: str, *, user_agent: str | None = None, ip: str | None = None) -> Link | None:
        async with self._tx() as conn:
            # FOR UPDATE: clicks on one link are counted one after the other.
            row = await conn.fetchrow("SELECT code, account, id_sms_api, phone_number, url, created FROM links "
                                      "WHERE code = $1 FOR UPDATE", code)
            if row is None:
                return None
            now = time.time()
            await conn.execute("INSERT INTO clicks (code, at, user_agent, ip) VALUES ($1, $2, $3, $4)",
                               code, now, (user_agent or "")[:512] or None, ip)
            count = await conn.fetchval("SELECT COUNT(*) FROM clicks WHERE code = $1", code)
            link = Link(row[0], row[1], row[2], row[3], row[4], row[5], count)
            batch = self._recorder.batch()
            batch.record(*shaping.click_event(link, code, now), now)
            await batch.flush(conn)
            return link

    async def link(self, code: str) -> Link | None:
        rows = await self._fetch_dicts("SELECT l.code, l.account, l.id_sms_api, l.phone_number, l.url, l.created, "
                                       "(SELECT COUNT(*) FROM clicks AS k WHERE k.code = l.code) AS clicks "
                                       "FROM links AS l WHERE l.code = $1", code)
        return Link(**rows[0]) if rows else None

    async def links(self, account: str, id_sms_api: str) -> list[Link]:
        rows = await self._fetch_dicts("SELECT l.code, l.account, l.id_sms_api, l.phone_number, l.url, l.created, "
                                       "(SELECT COUNT(*) FROM clicks AS k WHERE k.code = l.code) AS clicks "
                                       "FROM links AS l WHERE l.account = $1 AND l.id_sms_api = $2 "
                                       "ORDER BY l.created", account, id_sms_api)
        return [Link(**r) for r in rows]

    async def add_call_note(self, account: str, number: str, text: str, *, source: str = "interface") -> int:
        now = time.time()
        async with self._tx() as conn:
            note_id: int = await conn.fetchval("INSERT INTO call_notes (account, device_id, number, text, source, at) "
                                               "VALUES ($1, NULL, $2, $3, $4, $5) RETURNING id",
                                               account, number, text, source, now)
            batch = self._recorder.batch()
            batch.record(*shaping.note_event(account, number, text, now, source, None), now)
            await batch.flush(conn)
        return note_id

    async def calls(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._fetch_dicts("SELECT id, device_id, direction, number, started_at, duration_s, job_id "
                                       "FROM call_events WHERE account = $1 ORDER BY id DESC LIMIT $2", account, limit)

    async def last_activity(self, account: str) -> float:
        async with self._read() as conn:
            at = await conn.fetchval("SELECT GREATEST(COALESCE((SELECT MAX(updated) FROM jobs WHERE account = $1), 0), "
                                     "COALESCE((SELECT MAX(stored_at) FROM inbound_sms WHERE account = $1), 0))",
                                     account)
        return float(at)

    async def inbound(self, account: str, limit: int = 100) -> list[dict[str, Any]]:
        return await self._fetch_dicts("SELECT id, device_id, sender, text, received_at, incomplete FROM inbound_sms "
                                       "WHERE account = $1 ORDER BY id DESC LIMIT $2", account, limit)

    async def get_inbound(self, account: str, inbound_id: int) -> dict[str, Any] | None:
        rows = await self._fetch_dicts(sql(_IN_SELECT + " AND i.id = ?"), account, inbound_id)
        if not rows:
            return None
        rows[0].pop("rowid_")
        return rows[0]

    async def messages(self, account: str, *, direction: str | None = None,
                       status: str | Sequence[str] | None = None, take: int = 50,
                       skip: int = 0, cursor: str | None = None) -> list[dict[str, Any]]:
        after = paging.parse_cursor(cursor) if cursor else None
        scope = shaping.message_scope(direction, status)
        if scope is None:
            return []
        statement, params = paging.keys_sql(account, outgoing=scope.outgoing, inbound=scope.inbound,
                                            states=scope.states, after=after, take=take, skip=skip)
        async with self._read() as conn:
            # The keys first (index walks), then the rows of the page only.
            chosen = [paging.Key(r[0], r[1], r[2]) for r in await conn.fetch(sql(statement), *params)]
            found: dict[tuple[str, int], dict[str, Any]] = {}
            out_ids = [k.id for k in chosen if k.direction == paging.OUT]
            in_ids = [k.id for k in chosen if k.direction == paging.IN]
            if out_ids:
                for r in await conn.fetch(sql(_OUT_SELECT + " AND j.id = ANY(?::bigint[])"), account, out_ids):
                    row = dict(r)
                    found[(paging.OUT, row.pop("rowid_"))] = row
            if in_ids:
                for r in await conn.fetch(sql(_IN_SELECT + " AND i.id = ANY(?::bigint[])"), account, in_ids):
                    row = dict(r)
                    found[(paging.IN, row.pop("rowid_"))] = row
        return shaping.message_page(chosen, found)
