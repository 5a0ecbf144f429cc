"""Webhook events given up on (dead letters), seen and sent again:
``GET /api/v1/webhooks/dead`` lists the account's, ``POST
/api/v1/webhooks/replay`` (``{"ids": [...]}``, or nothing for all of them)
makes them live again, due now. Bearer authentication; an account sees and
replays only its own. ``simbridge webhooks dead|replay`` calls these."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from bridge.api import bodies
from bridge.api._store import OutboxStore
from bridge.api.auth import Auth
from bridge.api.envelope import iso, success
from bridge.api.errors import ApiError

MAX_IDS = 500


def dead_view(row: dict[str, Any]) -> dict[str, Any]:
    try:
        payload = json.loads(row["payload"])
    except ValueError:
        payload = row["payload"]
    return {"id": row["id"], "event": row["kind"], "order_key": row["order_key"], "created_at": iso(row["created"]),
            "attempts": row["attempts"], "last_error": row["last_error"], "payload": payload}


class DeadLetters:
    def __init__(self, *, auth: Auth, outbox: OutboxStore | None) -> None:
        self.auth = auth
        self.outbox = outbox

    def _store(self) -> OutboxStore:
        if self.outbox is None:
            raise ApiError(404, "this server keeps no webhook outbox")
        return self.outbox

    async def list_dead(self, request: web.Request) -> web.Response:
        account = self.auth.bearer(request)
        take = bodies.int_param(request.query, "take", 100, 1, 1000)
        rows = await self._store().dead_letters(account.login, take)
        return success([dead_view(r) for r in rows])

    async def replay(self, request: web.Request) -> web.Response:
        params = await bodies.params(request)
        account = self.auth.bearer_enabled(request, params)
        ids = params.get("ids")
        if ids is not None and (not isinstance(ids, list) or len(ids) > MAX_IDS
                                or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**62
                                           for i in ids)):
            raise ApiError(400, f"'ids' must be a list of at most {MAX_IDS} event ids (positive whole numbers)")
        replayed = await self._store().replay_dead(account.login, ids)
        return success({"replayed": replayed})
