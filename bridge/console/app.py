"""The web console's server side: served at ``/console`` by the API's app
factory (a sub-application on the same listener and TLS), it signs people
in with their account's login and access key, keeps a cookie session with a
CSRF token, and answers the page's JSON calls by asking the API's
:class:`~bridge.api.manage.Manage` — the same object behind the API's own
routes, so the console can do nothing the API cannot. The page itself is
plain HTML, CSS and JavaScript shipped in the package (``static/``): no
build step, no CDN.
"""

from __future__ import annotations

import logging
import secrets
from importlib import resources
from typing import Any

from aiohttp import web

from bridge.api.auth import Auth
from bridge.api.errors import ApiError
from bridge.api.manage import MAX_JOBS, Manage
from bridge.config import AccountConfig
from bridge.console.sessions import COOKIE, PRE_COOKIE, Session, Sessions, same

log = logging.getLogger(__name__)

STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _asset(name: str) -> bytes:
    return resources.files("bridge.console").joinpath("static", name).read_bytes()


class Console:
    """``Console(ttl=…)``; the API's app factory calls :meth:`app`."""
    prefix = "/console"

    def __init__(self, *, ttl: float = 12 * 3600.0) -> None:
        self.sessions = Sessions(ttl=ttl)

    def app(self, *, manage: Manage, auth: Auth) -> web.Application:
        routes = _Routes(manage=manage, auth=auth, sessions=self.sessions)
        app = web.Application(middlewares=[_headers])
        r = app.router
        r.add_get("", routes.page)
        r.add_get("/", routes.page)
        r.add_get("/static/{name}", routes.static)
        r.add_get("/session", routes.session)
        r.add_post("/login", routes.login)
        r.add_post("/logout", routes.logout)
        r.add_get("/api/threads", routes.threads)
        r.add_get("/api/threads/{number}", routes.thread)
        r.add_post("/api/threads/{number}", routes.reply)
        r.add_get("/api/jobs", routes.jobs)
        r.add_get("/api/jobs/counts", routes.counts)
        r.add_get("/api/jobs/{id}", routes.job)
        r.add_post("/api/jobs/{id}/cancel", routes.cancel)
        r.add_get("/api/devices", routes.devices)
        r.add_post("/api/devices/{id}/recheck", routes.recheck)
        r.add_get("/api/webhooks", routes.webhooks)
        r.add_post("/api/webhooks/{id}/replay", routes.replay)
        r.add_post("/api/webhooks/test", routes.test_event)
        r.add_get("/api/events", routes.events)
        return app


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="Strict",
                        secure=request.secure)


class _Routes:
    def __init__(self, *, manage: Manage, auth: Auth, sessions: Sessions) -> None:
        self.manage = manage
        self.auth = auth
        self.sessions = sessions

    # -- page and sign-in -----------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name), content_type=STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    def _viewer(self, request: web.Request) -> tuple[Session, AccountConfig]:
        session = self.sessions.get(request.cookies.get(COOKIE))
        account = self.manage.settings.config.account(session.login) if session else None
        if session is None or account is None or not account.enabled:
            raise ApiError(401, "sign in first")
        return session, account

    def _checked(self, request: web.Request) -> AccountConfig:
        """The viewer of a state-changing request, after its CSRF token."""
        session, account = self._viewer(request)
        if not same(request.headers.get("X-CSRF-Token"), session.csrf):
            raise ApiError(403, "missing or wrong CSRF token (reload the page)")
        return account

    def _scoped(self, request: web.Request, *, write: bool = False) -> AccountConfig:
        viewer = self._checked(request) if write else self._viewer(request)[1]
        return self.manage.scope(viewer, request.query.get("account"))

    async def session(self, request: web.Request) -> web.Response:
        """Who is signed in (and their CSRF token); else a sign-in token."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        account = self.manage.settings.config.account(session.login) if session else None
        if session is None or account is None:
            pre = request.cookies.get(PRE_COOKIE) or ""
            if len(pre) < 32:
                pre = secrets.token_urlsafe(24)
            response = web.json_response({"signed_in": False, "csrf": pre})
            _set_cookie(request, response, PRE_COOKIE, pre, 3600)
            return response
        return web.json_response({"signed_in": True, "login": account.login, "csrf": session.csrf,
                                  "operator": self.manage.is_operator(account),
                                  "accounts": self.manage.accounts(account)})

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not same(str(form.get("csrf", "")), request.cookies.get(PRE_COOKIE)):
            raise ApiError(403, "missing or wrong CSRF token (reload the page)")
        login, key = form.get("login"), form.get("key")
        account = self.auth.check_login(login if isinstance(login, str) else None,
                                        key if isinstance(key, str) else None)
        if account is None:
            log.info("console: a sign-in was refused")
            raise ApiError(401, "wrong login or access key")
        if not account.enabled:
            raise ApiError(403, "this account is disabled")
        token, session = self.sessions.create(account.login)
        response = web.json_response({"signed_in": True, "login": account.login, "csrf": session.csrf,
                                      "operator": self.manage.is_operator(account),
                                      "accounts": self.manage.accounts(account)})
        _set_cookie(request, response, COOKIE, token, int(self.sessions.ttl))
        response.del_cookie(PRE_COOKIE, path="/console")
        log.info("console: %s signed in", account.login)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self._checked(request)
        self.sessions.drop(request.cookies.get(COOKIE))
        response = web.json_response({"signed_in": False})
        response.del_cookie(COOKIE, path="/console")
        return response

    # -- what the page asks (each a Manage call, as the API's routes) ------------------------

    async def threads(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.threads(self._scoped(request)))

    async def thread(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.thread(self._scoped(request), request.match_info["number"]))

    async def reply(self, request: web.Request) -> web.Response:
        account = self._scoped(request, write=True)
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        if not isinstance(body, dict):
            raise ApiError(400, "body must be an object with 'message'")
        return web.json_response(await self.manage.send(account, request.match_info["number"], body.get("message")))

    async def jobs(self, request: web.Request) -> web.Response:
        try:
            take = min(MAX_JOBS, max(1, int(request.query.get("take", "100"))))
        except ValueError:
            raise ApiError(400, "'take' must be a number") from None
        return web.json_response(await self.manage.find(self._scoped(request), state=request.query.get("state"),
                                                        search=request.query.get("search", ""), limit=take))

    async def counts(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.counts(self._scoped(request)))

    async def job(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.job(self._scoped(request), request.match_info["id"]))

    async def cancel(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.cancel(self._scoped(request, write=True),
                                                          request.match_info["id"]))

    async def devices(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.devices(self._viewer(request)[1]))

    async def recheck(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.recheck(self._checked(request), request.match_info["id"]))

    async def webhooks(self, request: web.Request) -> web.Response:
        delivered = request.query.get("delivered") == "true"
        return web.json_response(await self.manage.webhook_events(self._scoped(request), delivered=delivered))

    async def replay(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise ApiError(400, "the event id is a number")
        return web.json_response(await self.manage.replay(self._scoped(request, write=True), int(raw)))

    async def test_event(self, request: web.Request) -> web.Response:
        return web.json_response(await self.manage.test_event(self._scoped(request, write=True)))

    async def events(self, request: web.Request) -> web.StreamResponse:
        return await self.manage.stream(request, self._scoped(request))
