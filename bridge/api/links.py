"""Tracked links: a message sent with a ``url`` and a placeholder
(``[Lien]``, see :mod:`bridge.api.judging`) carries ``{public_url}/l/{code}``;
following it records the click (a ``link_clicked`` webhook) and redirects."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bridge.api._store import Link, RecordStore

LINK_CODE_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")


def short_url(public_url: str, code: str) -> str:
    return f"{public_url}/l/{code}"


def link_view(link: Link, public_url: str) -> dict[str, Any]:
    return {"url": link.url, "short_url": short_url(public_url, link.code), "clicks": link.clicks}


class Links:
    def __init__(self, *, records: RecordStore) -> None:
        self.records = records

    async def follow(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        link = await self.records.click(code, user_agent=request.headers.get("User-Agent"),
                                        ip=request.remote) if LINK_CODE_RE.match(code) else None
        if link is None:
            return web.Response(status=404, text="no such link\n", content_type="text/plain")
        return web.Response(status=302, headers={"Location": link.url, "Cache-Control": "no-store"})
