"""The HTTP API's application: every room built from its collaborators, and
every route. inSIM's endpoints (seed 000) and their older Ardary form (seeds
001/003), and the useful extras of the others: Notimation's read side,
SMSFLOW's verification codes. docs/api.md describes every endpoint; the
OpenAPI document (:mod:`bridge.api.openapi`) is served at
``/api/v1/openapi.json``.

Where things are: an SMS is judged in :mod:`~bridge.api.judging`; requests
are read in :mod:`~bridge.api.bodies` and authenticated in
:mod:`~bridge.api.auth`; each dialect has its module (:mod:`~bridge.api.insim`,
:mod:`~bridge.api.ardary`, :mod:`~bridge.api.notimation`,
:mod:`~bridge.api.codes`), tracked links :mod:`~bridge.api.links`, operators'
routes :mod:`~bridge.api.ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from bridge.api import ardary
from bridge.api._store import ApiTokenStore, CodeStore, JobQueue, OutboxStore, RecordStore
from bridge.api.auth import Auth
from bridge.api.codes import Codes
from bridge.api.deadletters import DeadLetters
from bridge.api.envelope import error_middleware
from bridge.api.insim import Insim
from bridge.api.links import Links
from bridge.api.manage import Manage, ManageRoutes
from bridge.api.notimation import Notimation
from bridge.api.ops import Ops
from bridge.api.settings import Settings
from bridge.api.smsflow import Smsflow
from bridge.api.views import DaemonView, MetricsSource
from bridge.api.workers import SplitPool
from bridge.config import Config
from bridge.core.sealing import Sealer

# SMSFLOW (seed 002): each path with and without its final slash (its examples use both).
SMSFLOW_ROUTES = (("/auth2/get_token_auth/", "POST", "get_token"), ("/auth2/revoke_token/", "POST", "revoke_token"),
                  ("/apiv2/sms/", "POST", "send_sms"), ("/apiv2/sms/", "GET", "sms_info"),
                  ("/apiv2/smscode/", "POST", "send_code"), ("/apiv2/smscode/", "GET", "list_codes"),
                  ("/apiv2/verify_code/", "POST", "verify_code"), ("/apiv2/balance", "GET", "balance"))
SENDSMS_PATHS = ("/api/v1/sendsms", "/api/v1/sendSms", *ardary.SEND_PATHS, ardary.SDK_SEND_PATH)


class SubApp(Protocol):
    """Something served beside the API on the same listener (the web console):
    given the API's :class:`Manage` and :class:`Auth`, it answers under ``prefix``."""
    prefix: str

    def app(self, *, manage: Manage, auth: Auth) -> web.Application: ...


class Api:
    """Builds the aiohttp application. ``daemon``: what the ops routes show and
    what click-to-call asks (None: no devices); ``metrics``: the page served at
    ``/metrics`` (None: a 404). ``workers`` judges bulk batches on a
    second core; its owner starts and closes it."""

    def __init__(self, *, config: Config, jobs: JobQueue, records: RecordStore, codes: CodeStore,
                 on_enqueued: Callable[[], None], daemon: DaemonView | None = None,
                 metrics: MetricsSource | None = None, workers: SplitPool | None = None,
                 outbox: OutboxStore | None = None, tokens: ApiTokenStore | None = None,
                 console: SubApp | None = None, sealer: Sealer | None = None) -> None:
        self.settings = Settings(config)
        # Seals the real text of verification-code SMS (the daemon's, from secret.key; else this process's own).
        self.sealer = sealer if sealer is not None else Sealer.ephemeral()
        self.workers = workers if workers is not None else SplitPool(processes=config.api.bulk_worker)
        auth = Auth(self.settings)
        self.insim = Insim(settings=self.settings, auth=auth, jobs=jobs, records=records, workers=self.workers,
                           on_enqueued=on_enqueued,
                           phones_online=daemon.phones_online if daemon is not None else lambda _login: False)
        self.notimation = Notimation(settings=self.settings, auth=auth, jobs=jobs, records=records,
                                     on_enqueued=on_enqueued)
        self.codes = Codes(settings=self.settings, auth=auth, codes=codes, records=records, on_enqueued=on_enqueued,
                           sealer=self.sealer)
        self.links = Links(records=records)
        self.dead_letters = DeadLetters(auth=auth, outbox=outbox)
        self.smsflow = Smsflow(settings=self.settings, auth=auth, jobs=jobs, records=records, codes=codes,
                               tokens=tokens, on_enqueued=on_enqueued, sealer=self.sealer)
        self.ops = Ops(settings=self.settings, auth=auth, daemon=daemon, metrics=metrics)
        self.auth = auth
        self.manage = Manage(settings=self.settings, jobs=jobs, records=records, outbox=outbox, daemon=daemon,
                             on_enqueued=on_enqueued)
        self.console = console

    def reload(self, config: Config) -> None:
        """A new configuration (SIGHUP): every later request reads it."""
        self.settings.reload(config)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.config.api.max_body_bytes,
                              middlewares=[error_middleware(lambda: self.settings.config.api.max_body_bytes)])
        r = app.router
        insim, notimation, codes, ops = self.insim, self.notimation, self.codes, self.ops
        for path in SENDSMS_PATHS:
            r.add_post(path, insim.sendsms)
        for path in ("/api/v1/contact", "/api/contact", ardary.SDK_CONTACT_PATH):
            r.add_post(path, insim.contact)
        for path in ("/api/v1/clicTocall", "/api/clicTocall"):
            r.add_post(path, insim.click_to_call)
        r.add_post("/api/v1/qualification", insim.qualification)
        r.add_get("/api/v1/sms", notimation.list_sms)
        r.add_post("/api/v1/sms", notimation.create_sms)
        r.add_get("/api/v1/sms/{id}", notimation.get_sms)
        r.add_get("/api/v1/phone_number/{country}/{number}", notimation.phone_number)
        r.add_post("/api/v1/smscode", codes.send)
        r.add_get("/api/v1/smscode", codes.list_codes)
        r.add_get("/api/v1/smscode/{id}", codes.get_code)
        r.add_post("/api/v1/verify_code", codes.verify)
        sf = self.smsflow
        for path, method, handler in SMSFLOW_ROUTES:
            bound = getattr(sf, handler)
            for variant in (path, path.rstrip("/")) if path.endswith("/") else (path, path + "/"):
                r.add_route(method, variant, bound)
        r.add_get("/api/v1/webhooks/dead", self.dead_letters.list_dead)
        r.add_post("/api/v1/webhooks/replay", self.dead_letters.replay)
        r.add_get("/l/{code}", self.links.follow, allow_head=False)
        r.add_get("/api/v1/openapi.json", ops.openapi)
        r.add_post("/api/v1/simulate/{what}", ops.simulate)
        ManageRoutes(auth=self.auth, manage=self.manage).add_routes(r)
        r.add_post("/api/v1/devices/{id}/recheck", ops.recheck)
        r.add_get("/healthz", ops.healthz)
        r.add_get("/metrics", ops.metrics)
        if self.console is not None and self.settings.config.console.enabled:
            app.add_subapp(self.console.prefix, self.console.app(manage=self.manage, auth=self.auth))
        return app
