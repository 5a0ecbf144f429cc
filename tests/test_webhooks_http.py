"""The webhook transport against real receivers on loopback: redirects (GET
followed and bounded, POST never), Basic auth from ``user:pass@``, a proxy from
the environment, non-Latin-1 URLs, HTTPS checked against the CA store, kept-alive
connections, long answers, cancellation, and one failing event never stopping
the others (a redirect loop, a payload the formatter chokes on)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from conftest import running, timeout, wait_until
from ops_util import self_signed
from test_webhooks import LOGIN, Receiver, hook_config, sendsms, simulate

from bridge.config import ConfigError, load
from bridge.ops.tls import server_context
from bridge.store.model import OutboxEvent
from bridge.webhooks import outbox as ob
from bridge.webhooks.forms import Request, sendable_url
from bridge.webhooks.http import HttpTransport, SendError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serving(routes: list[tuple[str, str, Handler]], tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A real aiohttp server on a loopback port; yields ``http(s)://127.0.0.1:PORT``."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@contextlib.asynccontextmanager
async def transport() -> AsyncIterator[HttpTransport]:
    async with HttpTransport(concurrency=4, timeout=timeout(5)) as t:
        yield t


# ----------------------------------------------------------------------------
# Redirects


async def test_get_follows_a_redirect_with_its_query():
    seen: list[tuple[str, str]] = []

    async def moved(request: web.Request) -> web.Response:
        seen.append(("old", request.query_string))
        raise web.HTTPFound(f"/new?{request.query_string}")

    async def new(request: web.Request) -> web.Response:
        seen.append(("new", request.query_string))
        return web.Response(text="OK")

    async with serving([("GET", "/old", moved), ("GET", "/new", new)]) as base, transport() as t:
        status = await t.send(Request("GET", f"{base}/old?status=%7B%22a%22%3A1%7D"))
    assert status == 200
    assert [where for where, _ in seen] == ["old", "new"]
    assert parse_qs(seen[1][1]) == {"status": ['{"a":1}']}


async def test_get_follows_up_to_five_redirects():
    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text="OK")
        raise web.HTTPFound(f"/r/{n - 1}")

    async with serving([("GET", "/r/{n}", hop)]) as base, transport() as t:
        assert await t.send(Request("GET", f"{base}/r/5")) == 200
        with pytest.raises(SendError, match="more than 5 redirects"):
            await t.send(Request("GET", f"{base}/r/6"))


async def test_get_redirects_are_bounded():
    hops = 0

    async def loop(request: web.Request) -> web.Response:
        nonlocal hops
        hops += 1
        raise web.HTTPFound("/loop")

    async with serving([("GET", "/loop", loop)]) as base, transport() as t:
        with pytest.raises(SendError, match="more than 5 redirects") as caught:
            await t.send(Request("GET", f"{base}/loop"))
    assert not caught.value.receiver_down
    assert hops == 6  # the first request and five redirects


async def test_post_is_never_redirected():
    final = 0

    async def moved(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect("/final")

    async def final_(request: web.Request) -> web.Response:
        nonlocal final
        final += 1
        return web.Response(text="OK")

    async with serving([("POST", "/hook", moved), ("POST", "/final", final_)]) as base, transport() as t:
        status = await t.send(Request("POST", f"{base}/hook", b"{}", {"Content-Type": "application/json"}))
    assert status == 307 and final == 0


# ----------------------------------------------------------------------------
# Credentials, URLs


async def test_user_and_password_in_the_url_are_sent_as_basic_auth():
    got: list[str | None] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(request.headers.get("Authorization"))
        return web.Response(text="OK")

    async with serving([("GET", "/hook", hook), ("POST", "/hook", hook)]) as base, transport() as t:
        authed = base.replace("http://", "http://crm-user:p%40ss%3Aw0rd@")
        assert await t.send(Request("GET", f"{authed}/hook?status=1")) == 200
        assert await t.send(Request("POST", f"{authed}/hook", b"{}")) == 200
        assert await t.send(Request("GET", f"{base}/hook")) == 200
    expected = "Basic " + base64.b64encode(b"crm-user:p@ss:w0rd").decode()
    assert got == [expected, expected, None]


async def test_credentials_are_not_sent_on_to_another_origin():
    got: dict[str, str | None] = {}

    async def there(request: web.Request) -> web.Response:
        got["there"] = request.headers.get("Authorization")
        return web.Response(text="OK")

    async with serving([("GET", "/there", there)]) as other:
        async def here(request: web.Request) -> web.Response:
            got["here"] = request.headers.get("Authorization")
            raise web.HTTPFound(f"{other}/there")

        async with serving([("GET", "/here", here)]) as base, transport() as t:
            authed = base.replace("http://", "http://crm-user:secret@")
            assert await t.send(Request("GET", f"{authed}/here")) == 200
    assert got == {"here": "Basic " + base64.b64encode(b"crm-user:secret").decode(), "there": None}


async def test_credentials_stay_within_their_origin_across_redirects_and_are_utf8():
    got: list[tuple[str, str | None]] = []

    async def first(request: web.Request) -> web.Response:
        got.append(("first", request.headers.get("Authorization")))
        raise web.HTTPFound("/second")  # the same origin: still theirs

    async def second(request: web.Request) -> web.Response:
        got.append(("second", request.headers.get("Authorization")))
        return web.Response(text="OK")

    async with serving([("GET", "/first", first), ("GET", "/second", second)]) as base, transport() as t:
        authed = base.replace("http://", "http://j%C3%BCrgen:p%C3%A4ss@")
        assert await t.send(Request("GET", f"{authed}/first")) == 200
    expected = "Basic " + base64.b64encode("jürgen:päss".encode()).decode()  # RFC 7617: UTF-8
    assert got == [("first", expected), ("second", expected)]


async def test_a_redirect_to_another_scheme_fails_that_attempt():
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("ftp://127.0.0.1/hook")

    async with serving([("GET", "/hook", moved)]) as base, transport() as t:
        with pytest.raises(SendError, match="redirected to an invalid URL") as caught:
            await t.send(Request("GET", f"{base}/hook"))
    assert not caught.value.receiver_down


async def test_a_non_latin1_url_is_sent_percent_encoded():
    got: list[tuple[str, str, dict[str, list[str]]]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((request.path, request.raw_path, parse_qs(request.query_string)))
        return web.Response(text="OK")

    async with serving([("GET", "/hoök", hook)]) as base, transport() as t:
        url = sendable_url(f"{base}/hoök?x=é") + "&status=%22%C3%A7a%22"
        assert await t.send(Request("GET", url)) == 200
        # Not yet made sendable: the transport encodes it itself rather than fail.
        assert await t.send(Request("GET", f"{base}/hoök?x=é")) == 200
    for path, raw_path, query in got:
        assert path == "/hoök" and raw_path.startswith("/ho%C3%B6k?")
        assert query["x"] == ["é"]
    assert got[0][2]["status"] == ['"ça"']


async def test_connection_refused_is_a_receiver_failure():
    async with serving([]) as base:
        pass  # the port is closed again
    async with transport() as t:
        with pytest.raises(SendError, match="cannot connect") as caught:
            await t.send(Request("GET", f"{base}/hook"))
    assert caught.value.receiver_down


# ----------------------------------------------------------------------------
# Connections, answers, TLS, cancellation


async def test_connections_are_kept_alive_and_a_closed_one_is_replaced():
    peers: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        closing = request.query.get("close") == "1"
        return web.Response(text="OK", headers={"Connection": "close"} if closing else None)

    async with serving([("GET", "/hook", hook)]) as base, transport() as t:
        for _ in range(20):
            assert await t.send(Request("GET", f"{base}/hook")) == 200
        assert len(set(peers)) == 1  # one connection, kept alive
        assert await t.send(Request("GET", f"{base}/hook?close=1")) == 200
        assert await t.send(Request("GET", f"{base}/hook")) == 200
    assert len(set(peers)) == 2 and peers[-1] != peers[0]


async def test_a_long_answer_is_cut_short_and_its_status_counts():
    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 200_000)  # Content-Length beyond the limit

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=202)  # chunked: the limit is found while reading
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                await resp.write(b"x" * 8192)
            await resp.write_eof()
        return resp

    async def small(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    routes: list[tuple[str, str, Handler]] = [("GET", "/sized", sized), ("GET", "/streamed", streamed),
                                              ("GET", "/small", small)]
    async with serving(routes) as base, \
            HttpTransport(concurrency=2, timeout=timeout(5), max_response_bytes=64 * 1024) as t:
        assert await t.send(Request("GET", f"{base}/sized")) == 200
        assert await t.send(Request("GET", f"{base}/streamed")) == 202
        assert await t.send(Request("GET", f"{base}/small")) == 200


async def test_https_is_checked_against_the_ca_store(tmp_path, monkeypatch):
    """A receiver whose certificate no trusted CA signed is refused; once the
    CA store (SSL_CERT_FILE, as Python's ssl reads it) holds it, it is reached."""
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    cert, key = self_signed(tmp_path, "receiver")

    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async with serving([("POST", "/hook", hook)], tls=server_context(cert, key)) as base:
        async with transport() as t:
            with pytest.raises(SendError, match="TLS") as caught:
                await t.send(Request("POST", f"{base}/hook", b"{}"))
        assert caught.value.receiver_down
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with transport() as t:
            assert await t.send(Request("POST", f"{base}/hook", b"{}")) == 200


async def test_a_cancelled_send_leaves_the_transport_working():
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="late")

    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async with serving([("GET", "/slow", slow), ("GET", "/hook", hook)]) as base, transport() as t:
        pending = asyncio.create_task(t.send(Request("GET", f"{base}/slow")))
        await asyncio.wait_for(arrived.wait(), timeout(5))
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert [await t.send(Request("GET", f"{base}/hook")) for _ in range(3)] == [200, 200, 200]
        release.set()


async def test_no_answer_within_the_timeout_is_a_timeout():
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async with serving([("GET", "/silent", silent)]) as base:
        async with HttpTransport(concurrency=2, timeout=timeout(0.3)) as t:
            with pytest.raises(TimeoutError):
                await t.send(Request("GET", f"{base}/silent"))
        release.set()


# ----------------------------------------------------------------------------
# A proxy from the environment


class RecordingProxy:
    """A forward HTTP proxy on loopback, one request per connection. A client
    sends it the absolute-form request target (RFC 9112 §3.2.2); it records
    that and the Proxy-Authorization header, and forwards the request to the
    origin in origin-form with ``Connection: close``."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, str | None]] = []  # (request line, Proxy-Authorization)
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, version = head[0].split(" ")
            headers = [line for line in head[1:] if line]
            fields = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in headers)}
            body = await reader.readexactly(int(fields.get("content-length", "0")))
            self.forwarded.append((head[0], fields.get("proxy-authorization")))
            url = urlsplit(target)
            keep = [h for h in headers if h.split(":", 1)[0].lower() not in
                    ("connection", "proxy-authorization", "proxy-connection", "keep-alive")]
            origin = f"{method} {url.path}{'?' + url.query if url.query else ''} {version}\r\n"
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            up_writer.write((origin + "\r\n".join(keep + ["Connection: close"]) + "\r\n\r\n").encode("latin-1")
                            + body)
            await up_writer.drain()
            writer.write(await up_reader.read())  # until the origin closes
            up_writer.close()
            await writer.drain()
        finally:
            writer.close()


async def test_proxy_from_the_environment_is_used(tmp_path, monkeypatch):
    got: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(json.loads(request.query["message"]))
        return web.Response(text="OK")

    async with serving([("GET", "/hook", receive)]) as base, RecordingProxy() as proxy:
        for name in ("NO_PROXY", "no_proxy", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://proxy-user:proxy-pw@127.0.0.1:{proxy.port}")
        # The in-daemon phones reach the agent listener on 127.0.0.1 (websockets
        # honours the same variables): they go direct; the receiver, named
        # localhost here, through the proxy.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        hook = base.replace("127.0.0.1", "localhost") + "/hook"
        async with running(hook_config(tmp_path, hook)) as daemon, aiohttp.ClientSession() as http:
            await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "via the proxy"})
            await wait_until(lambda: len(got) == 1, what="the webhook through the proxy")
        assert got[0]["message"] == "via the proxy"
        [(line, auth)] = proxy.forwarded
        assert line.startswith(f"GET {hook}?message=") and line.endswith(" HTTP/1.1")
        assert auth == "Basic " + base64.b64encode(b"proxy-user:proxy-pw").decode()

        # NO_PROXY names the receiver: straight there.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        async with running(hook_config(tmp_path / "direct", hook)) as daemon, \
                aiohttp.ClientSession() as http:
            await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "direct"})
            await wait_until(lambda: len(got) == 2, what="the webhook sent directly")
        assert len(proxy.forwarded) == 1


async def test_https_goes_through_the_proxy_with_connect(monkeypatch):
    """HTTPS_PROXY: the client asks the proxy for a tunnel (RFC 9110 §9.3.6),
    credentials in Proxy-Authorization. This proxy refuses the tunnel: the
    attempt fails as a receiver failure, after the proxy saw the request."""
    seen: list[list[str]] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        seen.append([line for line in head if line])
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("NO_PROXY", "no_proxy", "https_proxy", "HTTP_PROXY", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://tunnel-user:tunnel-pw@127.0.0.1:{port}")
        async with transport() as t:
            with pytest.raises(SendError, match="the proxy refused: HTTP 403") as caught:
                await t.send(Request("POST", "https://crm.example:8443/hook", b"{}"))
        assert caught.value.receiver_down
    finally:
        server.close()
        await server.wait_closed()
    [head] = seen
    assert head[0] == "CONNECT crm.example:8443 HTTP/1.1"
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'tunnel-user:tunnel-pw').decode()}" in head


# ----------------------------------------------------------------------------
# Through the daemon: one event's trouble is that event's only


async def all_rows(daemon: Any) -> list[dict[str, Any]]:
    """Every outbox column (attempts, last_error, …), as the store keeps them."""
    store: Any = daemon.store
    return await store._run(store._select_dicts, "SELECT * FROM outbox ORDER BY id", ())


async def test_non_latin1_webhook_url_is_delivered(tmp_path):
    got: list[tuple[str, dict[str, list[str]]]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((request.path, parse_qs(request.query_string)))
        return web.Response(text="OK")

    async with serving([("GET", "/hoök", hook)]) as base:
        url = f"{base}/hoök?x=é"
        async with running(hook_config(tmp_path, url)) as daemon, aiohttp.ClientSession() as http:
            await simulate(http, daemon, "incoming-sms", {"from": "+33612345678", "text": "Grüße ✅"})
            await wait_until(lambda: got, what="the webhook")
            await wait_until(lambda: daemon.webhooks.stats.delivered == 1, what="recorded as delivered")
    [(path, query)] = got
    assert path == "/hoök" and query["x"] == ["é"]
    assert json.loads(query["message"][0])["message"] == "Grüße ✅"


async def test_a_redirect_loop_fails_that_event_and_the_others_go_on(tmp_path):
    """Statuses of one message loop between redirects; the other messages' are delivered."""
    delivered: list[dict[str, Any]] = []
    doomed: set[str] = set()
    looped = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal looped
        status = json.loads(request.query["status"])
        if status["id_sms_api"] in doomed:
            looped += 1
            raise web.HTTPFound(f"/hook?{request.query_string}")
        delivered.append(status)
        return web.Response(text="OK")

    async with serving([("GET", "/hook", hook)]) as base, \
            running(hook_config(tmp_path, f"{base}/hook", timeout=timeout(2), lease=timeout(5))) as daemon, \
            aiohttp.ClientSession() as http:
        doomed.add("LOOPING-1")
        await sendsms(http, daemon, [{"phone_number": "+33612340000", "message": "loops",
                                      "id_sms_api": "LOOPING-1"}])
        others = await sendsms(http, daemon, [{"phone_number": f"+3361234{i:04d}", "message": f"m{i}"}
                                              for i in range(1, 6)])
        ids = {a["id_sms_api"] for a in others}
        await wait_until(lambda: {d["id_sms_api"] for d in delivered if d["status"] == "received"} == ids,
                         what="every other message's statuses")
        await wait_until(lambda: daemon.webhooks.stats.failed_attempts >= 2, what="the looping event retried")
        rows = await all_rows(daemon)
        [stuck] = [r for r in rows if not r["delivered_at"] and json.loads(r["payload"]).get("id_sms_api")
                   == "LOOPING-1" and r["attempts"] >= 1]
        assert stuck["last_error"] == "more than 5 redirects"
        assert daemon.webhooks.running.is_set()
    assert looped >= 12  # 6 requests per attempt, at least two attempts
    assert "LOOPING-1" not in {d["id_sms_api"] for d in delivered}


async def test_an_event_the_formatter_chokes_on_is_retried_alone(tmp_path, receiver, caplog):
    """A stored payload whose date no clock can show (the formatter raises
    OverflowError) fails its own attempts; later events of other keys go out."""
    async with running(hook_config(tmp_path, receiver.url)) as daemon, aiohttp.ClientSession() as http:
        await daemon.store.record_events([OutboxEvent(
            account=LOGIN, kind=ob.SMS_RECEIVED, order_key="bad-key",
            payload={"from": "+33612345678", "message": "x", "date": 1e300})])
        await wait_until(lambda: daemon.webhooks.stats.failed_attempts >= 2, what="the bad event retried")
        answers = await sendsms(http, daemon, [{"phone_number": "+33612345678", "message": "fine"}])
        await simulate(http, daemon, "call", {"from": "+33612345679", "duration": 5})
        await wait_until(lambda: len(receiver.of("status")) == 2 and len(receiver.of("calls")) == 1,
                         what="the other events")
        assert {s["id_sms_api"] for s in receiver.of("status")} == {answers[0]["id_sms_api"]}
        rows = await all_rows(daemon)
        [bad] = [r for r in rows if r["order_key"] == "bad-key"]
        assert not bad["delivered_at"] and bad["attempts"] >= 2
        assert bad["last_error"] == "formatting failed: OverflowError"
        said = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and "could not be formatted" in r.getMessage()]
        assert said == [f"webhook event {bad['id']} (sms_received) of account {LOGIN} could not be formatted "
                        "(OverflowError); retrying"]  # once, however many attempts
        assert receiver.of("message") == []
        assert daemon.webhooks.running.is_set()


# ----------------------------------------------------------------------------
# Config


def test_config_file_with_an_unsendable_url_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "simbridge.toml"
    path.write_text('[[accounts]]\nlogin = "a"\naccess_key = "k"\nwebhook_url = "http://crm.example/ok"\n\n'
                    '[[accounts]]\nlogin = "b"\naccess_key = "k"\nwebhook_url = "http://crm.example/a b"\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"accounts\[1\]\.webhook_url: must not contain spaces"):
        load(path)
