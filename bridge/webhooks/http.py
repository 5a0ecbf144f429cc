"""The webhook transport: libcurl (pycurl), driven from the event loop.

One libcurl multi handle for the deliverer's life, driven from the event loop
(:mod:`bridge.webhooks.curlloop`: no threads), and a pool of reused easy
handles, at most one per concurrent request. libcurl keeps connections alive, per host, in the
multi handle's cache (at most :attr:`HttpTransport.concurrency`, idle ones
closed after :data:`KEEPALIVE_S`). What it does with a
:class:`~bridge.webhooks.forms.Request`:

- ``user:pass@`` in the URL goes out as ``Authorization: Basic …`` (UTF-8,
  RFC 7617), and only to that origin (scheme, host, port): a redirect to
  another origin is made without it.
- Redirects are followed here (not by libcurl) for GET only, at most
  :data:`MAX_REDIRECTS` hops (a loop fails the attempt), to http(s) only. A
  POST is never redirected: its 3xx is the answer, and the deliverer counts it
  as a failed attempt. Each hop picks its proxy and credentials afresh.
- Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
  ``NO_PROXY`` and their lower-case forms, read once with the standard
  library's rules and the answer kept per origin), and are handed to libcurl
  for each request: libcurl's own reading of the environment is switched off,
  since it ignores upper-case ``HTTP_PROXY`` and reads ``NO_PROXY`` its own
  way. Plain HTTP goes to the proxy in absolute form with
  ``Proxy-Authorization``; HTTPS through a ``CONNECT`` tunnel with it.
- HTTP/1.1; no cookies, no compressed answers asked for, no ``Expect:
  100-continue``; at most :data:`MAX_RESPONSE_BYTES` of an answer is read (a
  longer one closes its connection; its status still counts). TLS is checked
  against the system's CA store (the one Python's ``ssl`` uses).

Every failure before a status line is a :class:`SendError` (or TimeoutError);
nothing else is expected, but the deliverer treats any exception as a failed
attempt of that one event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
import urllib.request
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import pycurl
from yarl import URL

from bridge.webhooks.curlloop import CurlLoop
from bridge.webhooks.forms import Request

log = logging.getLogger(__name__)

USER_AGENT = "simbridge-webhooks/1"
MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 64 * 1024  # we read (and ignore) at most this much of an answer
KEEPALIVE_S = 50  # idle connections are not reused after this (receivers often close at 60 s or more)
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_ORIGIN_CACHE_MAX = 1024  # origins remembered (proxy, credentials); redirects may name many

# libcurl error codes (https://curl.se/libcurl/c/libcurl-errors.html) sorted by what they mean here.
_INVALID_URL = frozenset((pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT))
_TLS = frozenset(getattr(pycurl, name) for name in (
    "E_SSL_CONNECT_ERROR", "E_PEER_FAILED_VERIFICATION", "E_SSL_CERTPROBLEM", "E_SSL_CIPHER",
    "E_SSL_CACERT_BADFILE", "E_SSL_SHUTDOWN_FAILED", "E_SSL_CRL_BADFILE", "E_SSL_ISSUER_ERROR",
    "E_SSL_PINNEDPUBKEYNOTMATCH", "E_SSL_INVALIDCERTSTATUS") if hasattr(pycurl, name))


class SendError(Exception):
    """One attempt failed before an answer. ``receiver_down``: the receiver
    itself is unreachable (refused, reset, DNS, proxy), not just this event."""

    def __init__(self, message: str, *, receiver_down: bool) -> None:
        super().__init__(message)
        self.receiver_down = receiver_down


class Proxies:
    """The environment's proxy settings (the transport keeps the answer per origin)."""

    def __init__(self) -> None:
        self._proxies = urllib.request.getproxies_environment()

    def __bool__(self) -> bool:
        return any(k in self._proxies for k in ("http", "https"))

    def describe(self) -> str:
        """The proxies in use, without credentials (for the log)."""
        shown = [f"{scheme}: {_without_userinfo(self._proxies[scheme])}"
                 for scheme in ("http", "https") if scheme in self._proxies]
        if "no" in self._proxies:
            shown.append(f"not for: {self._proxies['no']}")
        return "; ".join(shown)

    def for_origin(self, scheme: str, host: str, port: int | None) -> str:
        """The proxy URL (credentials included) for this origin; "" to go direct."""
        proxy = self._proxies.get(scheme)
        if not proxy:
            return ""
        if _proxy_bypass(f"{host}:{port}" if port else host, self._proxies):
            return ""
        return proxy if "://" in proxy else f"http://{proxy}"


# The standard library's NO_PROXY rules (not in typeshed, present since Python 3.0).
_proxy_bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


@dataclasses.dataclass(frozen=True, slots=True)
class _Origin:
    """What one ``scheme://authority`` means for a request."""
    key: tuple[str, str, int]  # scheme, host, port: credentials go to this origin only
    head: str  # ``scheme://authority`` as written in the URL
    prefix: str  # the same as sent: without userinfo
    userinfo: tuple[bytes, bytes] | None  # decoded user and password
    proxy: str  # "" to go direct


class Sending:
    """One request in flight (with its redirects), from :meth:`HttpTransport.submit`."""

    __slots__ = ("transport", "request", "callback", "headers", "origin", "deadline", "curl", "hops", "done")

    def __init__(self, transport: HttpTransport, request: Request,
                 callback: Callable[[int | BaseException], None]) -> None:
        self.transport = transport
        self.request = request
        self.callback = callback
        self.headers: tuple[str, ...] = ()
        self.origin: _Origin | None = None
        self.deadline = 0.0
        self.curl: pycurl.Curl | None = None
        self.hops = 0
        self.done = False

    def answered(self, curl: pycurl.Curl, error: pycurl.error | None) -> None:
        self.transport._answered(self, curl, error)

    def finish(self, result: int | BaseException) -> None:
        self.done = True
        try:
            self.callback(result)
        except Exception:  # the caller's fault; the other requests go on
            log.exception("webhook transport: a completion callback failed")


class HttpTransport:
    """Sends :class:`Request` s; status codes back. Use as ``async with``."""

    def __init__(self, *, concurrency: int, timeout: float, max_redirects: int = MAX_REDIRECTS,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, proxies: Proxies | None = None) -> None:
        self.concurrency = concurrency
        self.timeout = timeout  # one attempt, connect to the answer's last byte read (redirects included)
        self.max_redirects = max_redirects
        self.max_response_bytes = max_response_bytes
        self.proxies = proxies if proxies is not None else Proxies()
        self._curls: CurlLoop | None = None
        self._idle: list[pycurl.Curl] = []
        self._sending: set[Sending] = set()
        self._origins: dict[str, _Origin] = {}
        verify = ssl.get_default_verify_paths()
        self._cafile = verify.cafile if verify.cafile and os.path.exists(verify.cafile) else None
        self._capath = verify.capath if verify.capath and os.path.isdir(verify.capath) else None

    async def __aenter__(self) -> HttpTransport:
        self._curls = CurlLoop(max_connections=self.concurrency)
        if self.proxies:
            log.info("webhooks go through the proxy from the environment (%s)", self.proxies.describe())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: the requests in flight are answered CancelledError."""
        if self._curls is not None:
            curls, self._curls = self._curls, None
            curls.close()
        idle, self._idle = self._idle, []
        for curl in idle:
            curl.close()
        sending, self._sending = self._sending, set()
        for one in sending:
            curl, one.curl = one.curl, None
            if curl is not None:
                curl.close()
            if not one.done:
                one.done = True
                one.finish(asyncio.CancelledError())

    def submit(self, request: Request, callback: Callable[[int | BaseException], None]) -> Sending:
        """Start sending ``request``; ``callback(status)`` with the final status
        code, or ``callback(error)`` (SendError, TimeoutError; CancelledError if
        the transport is closed first) — exactly once, from the loop, never from
        inside this call. The :class:`Sending` returned can be :meth:`cancel` led."""
        sending = Sending(self, request, callback)
        curls = self._curls
        if curls is None:
            asyncio.get_running_loop().call_soon(
                sending.finish, SendError("the webhook transport is closed", receiver_down=False))
            return sending
        try:
            url = request.url if request.url.isascii() else _encoded(request.url)
            sending.headers = _header_lines(request)
            sending.origin = self._origin(url, redirected=False)
        except SendError as exc:
            curls.loop.call_soon(sending.finish, exc)
            return sending
        sending.deadline = curls.loop.time() + self.timeout
        sending.curl = self._idle.pop() if self._idle else self._new_handle()
        self._sending.add(sending)
        self._hop(sending, url)
        return sending

    async def send(self, request: Request) -> int:
        """Send ``request``; the final status code. SendError or TimeoutError if no answer."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sending = self.submit(request, lambda result: _resolve(future, result))
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(sending)
            raise

    def cancel(self, sending: Sending) -> None:
        """Stop a request in flight; its callback is not called."""
        curl = sending.curl
        if sending.done or curl is None:
            return
        sending.done = True
        self._sending.discard(sending)
        sending.curl = None
        if self._curls is not None:
            self._curls.cancel(curl)
        curl.close()  # cut short mid-transfer: not trusted again

    def _hop(self, sending: Sending, url: str) -> None:
        """Make one request of ``sending`` (the first, or a redirect's)."""
        curls, curl = self._curls, sending.curl
        assert curls is not None and curl is not None and sending.origin is not None
        left_ms = int((sending.deadline - curls.loop.time()) * 1000)
        if left_ms <= 0:
            self._finish(sending, TimeoutError())
            return
        try:
            self._prepare(curl, sending.request, url, sending.origin, sending.headers, left_ms)
        except SendError as exc:
            self._finish(sending, exc)
            return
        curls.start(curl, sending.answered)

    def _answered(self, sending: Sending, curl: pycurl.Curl, error: pycurl.error | None) -> None:
        """One request of ``sending`` is over: its status, a redirect to follow, or a failure."""
        origin = sending.origin
        assert origin is not None
        result: int | BaseException
        try:
            if error is not None:
                result = self._failed(curl, error, origin, sending.hops)
            else:
                result = curl.getinfo(pycurl.RESPONSE_CODE)
                if sending.request.method == "GET" and result in REDIRECT_STATUSES:
                    location: str | None = curl.getinfo(pycurl.REDIRECT_URL)
                    if location:  # else no usable Location: the 3xx is the answer
                        sending.hops += 1
                        if sending.hops > self.max_redirects:
                            raise SendError(f"more than {self.max_redirects} redirects", receiver_down=False)
                        url = location if location.isascii() else _encoded(location)
                        sending.origin = self._origin(url, redirected=True)
                        if sending.origin.userinfo is None and origin.userinfo is not None \
                                and sending.origin.key == origin.key:  # same origin: still theirs
                            sending.origin = dataclasses.replace(sending.origin, userinfo=origin.userinfo)
                        self._hop(sending, url)
                        return
        except (SendError, TimeoutError) as exc:
            result = exc
        except Exception as exc:  # not expected; still only this request's failure
            log.debug("webhook request failed unexpectedly", exc_info=True)
            result = exc
        self._finish(sending, result)

    def _finish(self, sending: Sending, result: int | BaseException) -> None:
        if sending.done:
            return
        sending.done = True
        self._sending.discard(sending)
        curl, sending.curl = sending.curl, None
        if curl is not None:
            if self._curls is not None:
                self._idle.append(curl)
            else:
                curl.close()
        sending.finish(result)

    # -- the parts -------------------------------------------------------------------

    def _new_handle(self) -> pycurl.Curl:
        """An easy handle with what never changes between requests."""
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.PATH_AS_IS, 1)  # the URL as written: no "/../" folded away
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.WRITEFUNCTION, len)  # the answer is read and dropped (len: "all taken")
        curl.setopt(pycurl.MAXFILESIZE_LARGE, self.max_response_bytes)
        curl.setopt(pycurl.MAXAGE_CONN, KEEPALIVE_S)
        curl.setopt(pycurl.NOPROXY, "")  # proxies are ours to choose (CURLOPT_PROXY per request)
        if self._cafile:
            curl.setopt(pycurl.CAINFO, self._cafile)
        if self._capath:
            curl.setopt(pycurl.CAPATH, self._capath)
        return curl

    def _prepare(self, curl: pycurl.Curl, request: Request, url: str, origin: _Origin,
                 headers: tuple[str, ...], timeout_ms: int) -> None:
        """Everything that may differ from the handle's last request is set again."""
        try:
            curl.setopt(pycurl.URL, url if origin.prefix == origin.head else origin.prefix + url[len(origin.head):])
        except UnicodeEncodeError:  # a redirect to a URL libcurl cannot take
            raise SendError("invalid URL", receiver_down=False) from None
        method = request.method
        if method != "GET":
            curl.setopt(pycurl.POSTFIELDS, request.body or b"")
        # The rest is set only when it differs from the handle's last request (a GET to
        # the same origin, as most are, sets nothing more).
        settings = (method, headers, origin.userinfo, origin.proxy)
        if getattr(curl, "settings", None) != settings:
            if method == "GET":
                curl.setopt(pycurl.HTTPGET, 1)
            curl.setopt(pycurl.CUSTOMREQUEST, None if method in ("GET", "POST") else method)
            curl.setopt(pycurl.HTTPHEADER, list(headers))
            if origin.userinfo is not None:
                curl.setopt(pycurl.USERNAME, origin.userinfo[0])
                curl.setopt(pycurl.PASSWORD, origin.userinfo[1])
            else:
                curl.unsetopt(pycurl.USERNAME)
                curl.unsetopt(pycurl.PASSWORD)
            curl.setopt(pycurl.PROXY, origin.proxy)
            curl.settings = settings
        curl.setopt(pycurl.TIMEOUT_MS, timeout_ms)

    def _origin(self, url: str, *, redirected: bool) -> _Origin:
        """Credentials and proxy of ``url``'s origin (kept per ``scheme://authority``)."""
        scheme, sep, rest = url.partition("://")
        end = len(rest)
        for stop in "/?#":
            at = rest.find(stop, 0, end)
            if at >= 0:
                end = at
        head = url[:len(scheme) + len(sep) + end]
        hit = self._origins.get(head)
        if hit is not None:
            return hit
        what = "redirected to an invalid URL" if redirected else "invalid URL"
        try:
            parts = urlsplit(head)
            port = parts.port
        except ValueError:
            raise SendError(what, receiver_down=False) from None
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise SendError(what, receiver_down=False)
        userinfo = None
        if parts.username is not None:  # RFC 7617: UTF-8
            userinfo = (unquote(parts.username).encode(), unquote(parts.password or "").encode())
        authority = parts.netloc.rpartition("@")[2]
        origin = _Origin(key=(parts.scheme, host, port or (443 if parts.scheme == "https" else 80)), head=head,
                         prefix=f"{parts.scheme}://{authority}", userinfo=userinfo,
                         proxy=self.proxies.for_origin(parts.scheme, host, port))
        if len(self._origins) >= _ORIGIN_CACHE_MAX:
            self._origins.clear()
        self._origins[head] = origin
        return origin

    def _failed(self, curl: pycurl.Curl, exc: pycurl.error, origin: _Origin, hops: int) -> int:
        """The status of a cut-short answer, or the SendError / TimeoutError for the failure."""
        code, message = exc.args[0], str(exc.args[1])[:120]
        if code == pycurl.E_FILESIZE_EXCEEDED:
            status: int = curl.getinfo(pycurl.RESPONSE_CODE)
            if status:
                return status  # an answer too long to read: its connection was dropped
        if code == pycurl.E_OPERATION_TIMEDOUT:
            raise TimeoutError
        if code in _INVALID_URL:
            raise SendError("redirected to an invalid URL" if hops else "invalid URL", receiver_down=False)
        connect_code: int = curl.getinfo(pycurl.HTTP_CONNECTCODE) if origin.proxy else 0
        if connect_code >= 300:
            raise SendError(f"the proxy refused: HTTP {connect_code}", receiver_down=True)
        if code in (pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_CONNECT) and origin.proxy:
            raise SendError(f"proxy unreachable: {_reason(curl, message)}", receiver_down=True)
        if code in (pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT):
            raise SendError(f"cannot connect: {_reason(curl, message)}", receiver_down=True)
        if code in _TLS:
            raise SendError(f"TLS: {message}", receiver_down=True)
        # Reset, empty or malformed answer, cut body, a proxy that broke off: the receiver's side.
        raise SendError(message or f"libcurl error {code}", receiver_down=True)


def _resolve(future: asyncio.Future[int], result: int | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, asyncio.CancelledError):
        future.cancel()
    elif isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _reason(curl: pycurl.Curl, message: str) -> str:
    """The system's word for a failed connect, else libcurl's (no URL in either)."""
    errno: int = curl.getinfo(pycurl.OS_ERRNO)
    return os.strerror(errno) if errno else message


def _encoded(url: str) -> str:
    """A URL with non-ASCII characters as it goes on the wire (percent-encoded UTF-8, IDNA host)."""
    try:
        return str(URL(url))
    except (ValueError, UnicodeError):
        raise SendError("invalid URL", receiver_down=False) from None


def _header_lines(request: Request) -> tuple[str, ...]:
    if not request.headers and request.method == "GET":
        return ()
    lines = [f"{name}: {value}" for name, value in request.headers.items()]
    if request.method != "GET":
        if not any(name.lower() == "content-type" for name in request.headers):
            lines.append("Content-Type: application/octet-stream")
        lines.append("Expect:")  # no 100-continue round trip for large bodies
    for line in lines:
        if not line.isascii() or "\r" in line or "\n" in line:
            raise SendError("a header cannot be sent (not ASCII, or a line break)", receiver_down=False)
    return tuple(lines)
