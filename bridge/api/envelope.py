"""How answers are written: Notimation's envelope (``{"status": "success",
"data": …}``; errors as ``{"status": "error", "message": …}``), inSIM's times,
and the middleware that turns every :class:`~bridge.api.errors.ApiError` (and
an over-long body) into such an answer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bridge.api._store import StoreUnavailable
from bridge.api.errors import ApiError
from device_agents.common import iso_utc


def iso(ts: float | None) -> str | None:
    """inSIM's time (``2025-10-29T10:00:00.000Z``), or None for no time."""
    return None if ts is None else _iso(ts)


@functools.lru_cache(maxsize=256)
def _iso(ts: float) -> str:
    # The messages of a batch share their time (queued together): written once a batch.
    return iso_utc(ts)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``data`` as a JSON answer (what ``web.json_response`` writes, encoded by orjson: a
    1,000-message sendsms answer in a twentieth of the time; text as UTF-8, not ``\\u`` escapes)."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def success(data: Any, **extra: Any) -> web.Response:
    return json_response({"status": "success", **extra, "data": data})


def error_middleware(max_body_bytes: Callable[[], int]) -> Middleware:
    """Every refusal as JSON. ``max_body_bytes``: the limit of the moment, named
    in the answer to a body over it."""
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.body(), status=exc.status)
        except StoreUnavailable as exc:
            # Not accepted: the client sends it again later (a message sent again with its
            # id_sms_api is stored once, should the store have kept it as the link broke).
            return json_response({"status": "error", "message": f"the store is unavailable ({exc}); "
                                  "not accepted: send again later"}, status=503,
                                 headers={"Retry-After": str(max(1, round(exc.retry_after)))})
        except web.HTTPRequestEntityTooLarge:
            return json_response({"status": "error", "message":
                                  f"request body over {max_body_bytes()} bytes"}, status=413)
    return errors
