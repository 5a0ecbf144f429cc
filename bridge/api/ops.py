"""Routes for operators and tooling rather than for CRMs: health, the OpenAPI
document, Prometheus metrics, simulated events on virtual
devices, and the re-check of a device whose token was revoked (``simbridge
pair --revoke``). What they show comes from the daemon, through
:class:`~bridge.api.views.DaemonView`."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from bridge.api import bodies
from bridge.api.auth import Auth
from bridge.api.envelope import json_response, success
from bridge.api.errors import ApiError
from bridge.api.openapi import document as openapi_document
from bridge.api.settings import Settings
from bridge.api.views import DaemonView, MetricsSource
from device_agents import protocol

SIMULATE_LIMITS = (("from", 32), ("text", protocol.MAX_TEXT), ("device", 64))


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False  # a unix socket or something unknown: not vouched for


class Ops:
    def __init__(self, *, settings: Settings, auth: Auth, daemon: DaemonView | None,
                 metrics: MetricsSource | None) -> None:
        self.settings = settings
        self.auth = auth
        self.daemon = daemon
        self.metrics_source = metrics

    async def healthz(self, request: web.Request) -> web.Response:
        """200 ``{"status": "ok"}``; 503 with ``store`` saying why while the
        store takes no writes (everything that would store something is refused)."""
        fault = await self.daemon.store_fault() if self.daemon is not None else None
        if fault is not None:
            return json_response({"status": "error", "message": f"the store takes no writes: {fault}",
                                  "store": fault}, status=503, headers={"Retry-After": "5"})
        return json_response({"status": "ok"})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document(self.settings.config.api.public_url))

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics. They name every login and device, so they are
        served to loopback clients only, or to whoever presents
        ``[api] metrics_token`` as a bearer token when one is set."""
        if self.metrics_source is None:
            raise ApiError(404, "no metrics in this daemon")
        token = self.settings.config.api.metrics_token
        if token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPUnauthorized(text="/metrics needs the bearer token set as [api] metrics_token\n",
                                           headers={"WWW-Authenticate": 'Bearer realm="simbridge metrics"'})
        elif not _loopback(request.remote):
            raise web.HTTPForbidden(text="/metrics is served to loopback clients only; set [api] metrics_token "
                                         "to read it from another host\n")
        return await self.metrics_source.handler(request)

    async def simulate(self, request: web.Request) -> web.Response:
        account = self.auth.bearer(request)
        if self.daemon is None:
            raise ApiError(404, "no virtual devices in this daemon")
        body = await bodies.object_body(request)
        for key, limit in SIMULATE_LIMITS:
            if isinstance(body.get(key), str) and len(body[key]) > limit:
                raise ApiError(400, f"'{key}' is longer than {limit} characters")
        try:
            result = await self.daemon.simulate(account, request.match_info["what"], body)
        except (ValueError, LookupError) as exc:
            raise ApiError(400, str(exc)) from None
        return success(result)

    async def recheck(self, request: web.Request) -> web.Response:
        """Close the device's session if its token was revoked. Bearer: the
        access key of the device's account; anything else is a 404."""
        config = self.settings.config
        device = config.device(request.match_info["id"])
        account = config.account(device.account) if device else None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if device is None or account is None or self.daemon is None \
                or not hmac.compare_digest(given.encode(), account.access_key.encode()):
            return json_response({"status": "error", "message": "unknown device or wrong access key"},
                                 status=404)
        closed = await self.daemon.recheck(device.id)
        return success({"device": device.id, "closed": closed})
