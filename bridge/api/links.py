"""Tracked links: a message sent with a ``url`` and a placeholder
(``[Lien]``, see :mod:`bridge.api.judging`) carries ``{public_url}/l/{code}``;
following it records the click (a ``link_clicked`` webhook) and redirects.

Anyone can follow a link, so recording is rate-limited per link and per
client (token buckets): past the limit the visitor is still redirected, but
no click row and no webhook is written — a loop on one link cannot flood the
store or the CRM.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.api._store import Link, RecordStore

LINK_CODE_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")


def short_url(public_url: str, code: str) -> str:
    return f"{public_url}/l/{code}"


def link_view(link: Link, public_url: str) -> dict[str, Any]:
    return {"url": link.url, "short_url": short_url(public_url, link.code), "clicks": link.clicks}


class Buckets:
    """Token buckets by key (``burst`` tokens, refilled at ``per_s``), at most
    ``keys`` remembered: the least recently used are forgotten (a forgotten
    key starts full again, which only ever errs towards recording)."""

    def __init__(self, *, burst: float, per_s: float, keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_s, self.keys, self.clock = burst, per_s, keys, clock
        self._state: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._state.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_s)

    def available(self, key: str) -> bool:
        return self._tokens(key, self.clock()) >= 1.0

    def take(self, key: str) -> bool:
        """Take a token if there is one; whether there was."""
        now = self.clock()
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        self._state.pop(key, None)
        self._state[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._state) > self.keys:
            self._state.popitem(last=False)
        return allowed


class ClickLimiter:
    """Whether a click is recorded: both its link's and its client's bucket
    must have a token. Defaults: a burst of 20 then one a second per link;
    10 then one every 6 s per client address."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_link = Buckets(burst=20, per_s=1.0, clock=clock)
        self.per_client = Buckets(burst=10, per_s=1 / 6, clock=clock)
        self.dropped = 0

    def allow(self, code: str, client: str | None) -> bool:
        """Both buckets are charged, and only when both have room."""
        client = client or "?"
        if self.per_link.available(code) and self.per_client.available(client):
            self.per_link.take(code)
            self.per_client.take(client)
            return True
        self.dropped += 1
        return False


class Links:
    def __init__(self, *, records: RecordStore, limiter: ClickLimiter | None = None) -> None:
        self.records = records
        self.limiter = limiter or ClickLimiter()

    async def follow(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        if not LINK_CODE_RE.match(code):
            link = None
        elif self.limiter.allow(code, request.remote):
            link = await self.records.click(code, user_agent=request.headers.get("User-Agent"), ip=request.remote)
        else:
            link = await self.records.link(code)  # redirected all the same, but not recorded
        if link is None:
            return web.Response(status=404, text="no such link\n", content_type="text/plain")
        return web.Response(status=302, headers={"Location": link.url, "Cache-Control": "no-store"})
