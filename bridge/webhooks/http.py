"""The webhook transport: aiohttp's client, tuned for many small requests.

One :class:`aiohttp.ClientSession` for the deliverer's life, on a
:class:`aiohttp.TCPConnector` whose limit is the deliverer's concurrency
(connections are kept alive, per host, and reused). What it does with a
:class:`~bridge.webhooks.forms.Request`:

- ``user:pass@`` in the URL goes out as ``Authorization: Basic …`` (aiohttp
  takes it out of the URL; it is dropped on a redirect to another origin).
- Redirects are followed for GET only, at most :data:`MAX_REDIRECTS` hops (a
  loop fails the attempt). A POST is never redirected: its 3xx is the answer,
  and the deliverer counts it as a failed attempt.
- Proxies come from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``,
  ``NO_PROXY`` and their lower-case forms, read with the standard library's
  rules when the transport starts). aiohttp's ``trust_env=True`` reads the
  same variables, and ``~/.netrc``, in a thread on every request, which halves
  throughput; here they are read once and the answer kept per origin.
- No cookies are kept (one jar would mix the accounts that share a host), no
  compressed answers are asked for, and at most :data:`MAX_RESPONSE_BYTES` of
  an answer is read; a longer one closes its connection.

Every failure before a status line is a :class:`SendError` (or TimeoutError);
nothing else is expected, but the deliverer treats any exception as a failed
attempt of that one event.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import urllib.request
from collections.abc import Callable

import aiohttp
from yarl import URL

from bridge.webhooks.forms import Request

log = logging.getLogger(__name__)

USER_AGENT = "simbridge-webhooks/1"
MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 64 * 1024  # we read (and ignore) at most this much of an answer
KEEPALIVE_S = 50.0  # idle connections are closed after this (receivers often close at 60 s or more)

_Proxy = tuple[URL | None, dict[str, str] | None]  # proxy, its headers (Proxy-Authorization)


class SendError(Exception):
    """One attempt failed before an answer. ``receiver_down``: the receiver
    itself is unreachable (refused, reset, DNS, proxy), not just this event."""

    def __init__(self, message: str, *, receiver_down: bool) -> None:
        super().__init__(message)
        self.receiver_down = receiver_down


class Proxies:
    """The environment's proxy settings, resolved once per origin."""

    def __init__(self) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._cache: dict[tuple[str, str, int | None], _Proxy] = {}

    def __bool__(self) -> bool:
        return any(k in self._proxies for k in ("http", "https"))

    def describe(self) -> str:
        """The proxies in use, without credentials (for the log)."""
        shown = [f"{scheme}: {URL(self._proxies[scheme]).with_user(None)}"
                 for scheme in ("http", "https") if scheme in self._proxies]
        if "no" in self._proxies:
            shown.append(f"not for: {self._proxies['no']}")
        return "; ".join(shown)

    def for_url(self, url: URL) -> _Proxy:
        key = (url.scheme, url.raw_host or "", url.explicit_port)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(url)
        return hit

    def _resolve(self, url: URL) -> _Proxy:
        proxy = self._proxies.get(url.scheme)
        if not proxy:
            return None, None
        host = url.raw_host or ""
        hostport = f"{host}:{url.port}" if url.port else host
        if _proxy_bypass(hostport, self._proxies):
            return None, None
        purl = URL(proxy if "://" in proxy else f"http://{proxy}")
        headers = None
        if purl.user is not None:  # RFC 7617, UTF-8
            token = base64.b64encode(f"{purl.user}:{purl.password or ''}".encode()).decode("ascii")
            headers = {"Proxy-Authorization": f"Basic {token}"}
        return purl.with_user(None), headers


# The standard library's NO_PROXY rules (not in typeshed, present since Python 3.0).
_proxy_bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


class HttpTransport:
    """Sends :class:`Request` s; status codes back. Use as ``async with``."""

    def __init__(self, *, concurrency: int, timeout: float, max_redirects: int = MAX_REDIRECTS,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, proxies: Proxies | None = None) -> None:
        self.concurrency = concurrency
        self.timeout = timeout  # one attempt, connect to the answer's last byte read (redirects included)
        self.max_redirects = max_redirects
        self.max_response_bytes = max_response_bytes
        self.proxies = proxies if proxies is not None else Proxies()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpTransport:
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency,
                                         keepalive_timeout=KEEPALIVE_S)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            headers={"User-Agent": USER_AGENT}, skip_auto_headers=("Accept-Encoding",),
            timeout=aiohttp.ClientTimeout(total=None), trust_env=False, raise_for_status=False)
        if self.proxies:
            log.info("webhooks go through the proxy from the environment (%s)", self.proxies.describe())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, request: Request) -> int:
        """Send ``request``; the final status code. SendError or TimeoutError if no answer."""
        session = self._session
        if session is None:
            raise SendError("the webhook transport is closed", receiver_down=False)
        raw = request.url
        url = URL(raw, encoded=True) if raw.isascii() else URL(raw)
        proxy, proxy_headers = self.proxies.for_url(url)
        headers = request.headers or None
        if proxy_headers and url.scheme == "http":
            # Plain HTTP goes to the proxy as it is: its credentials ride on the
            # request (aiohttp sends proxy_headers only on an HTTPS CONNECT).
            headers = {**(headers or {}), **proxy_headers}
        get = request.method == "GET"
        # aiohttp's max_redirects counts redirect answers, the last of which it
        # refuses to follow: N + 1 follows at most N redirects.
        try:
            async with asyncio.timeout(self.timeout):
                async with session.request(request.method, url, data=request.body, headers=headers,
                                           allow_redirects=get, max_redirects=self.max_redirects + 1,
                                           proxy=proxy, proxy_headers=proxy_headers) as resp:
                    if not resp.content.is_eof():
                        await self._drain(resp)
                    return resp.status
        except aiohttp.TooManyRedirects:
            raise SendError(f"more than {self.max_redirects} redirects", receiver_down=False) from None
        except aiohttp.InvalidURL as exc:  # includes a redirect to somewhere that cannot be sent
            what = "redirected to an invalid URL" if isinstance(exc, aiohttp.RedirectClientError) else "invalid URL"
            raise SendError(what, receiver_down=False) from None
        except (aiohttp.ServerTimeoutError, TimeoutError):
            raise TimeoutError from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise SendError(f"proxy unreachable: {_os_reason(exc)}", receiver_down=True) from None
        except aiohttp.ClientConnectorError as exc:
            raise SendError(f"cannot connect: {_os_reason(exc)}", receiver_down=True) from None
        except aiohttp.ClientConnectionError as exc:  # reset, disconnected, payload cut
            raise SendError(f"{type(exc).__name__}: {_os_reason(exc)}", receiver_down=True) from None
        except aiohttp.ClientHttpProxyError as exc:
            raise SendError(f"the proxy refused: HTTP {exc.status}", receiver_down=True) from None
        except aiohttp.ClientResponseError as exc:  # a malformed answer
            raise SendError(f"bad answer ({type(exc).__name__}, HTTP {exc.status})", receiver_down=True) from None
        except aiohttp.ClientPayloadError:
            raise SendError("the answer's body was cut or malformed", receiver_down=True) from None
        except OSError as exc:
            raise SendError(f"{type(exc).__name__}: {exc.strerror or exc}", receiver_down=True) from None

    async def _drain(self, resp: aiohttp.ClientResponse) -> None:
        """Read the (ignored) answer so the connection can be reused; give up on a long one."""
        content = resp.content
        left = self.max_response_bytes
        while not content.is_eof():
            chunk = await content.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
            if left <= 0:
                resp.close()  # not worth reading: drop the connection instead
                return


def _os_reason(exc: BaseException) -> str:
    """A short reason without URLs (they carry the event, numbers included)."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        return os_error.strerror or type(os_error).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = getattr(exc, "message", None) or type(exc).__name__
    return str(text)[:120]
