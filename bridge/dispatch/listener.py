"""The agent listener: one websocket per device, speaking device_agents.protocol.

The listener speaks first: a ``challenge`` with a fresh nonce. The agent's
``hello`` proves it holds the device's token with an HMAC over that nonce, so
the token never crosses the wire and a sniffed hello cannot be replayed.
Every authentication failure (unknown device, wrong proof, revoked token)
closes with the same code and reason, so that nothing tells an outsider
which device ids exist; the log says which it was.

Liveness costs nothing while an agent talks: every agent pings every 20 s
(and sends its status when it changes), so the bridge notes when it last heard
anything from each (``AgentConnection.heard``) and pings only an agent
silent for ``[agents] silence_s``; no pong within a third of that cuts
the connection. One sweep covers every session, instead of a keepalive
task, a ping and a pong per device a minute.

Connections that have not proved a token are capped in number
(``[agents] max_unauthenticated``; more are turned away with 1013) and in
time (``hello_timeout_s``). A bad frame closes *that* session with a policy
code (1008, or 1009 for a frame over the size limit) and a logged reason;
every other session and the API carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl as ssl_module
import time
from collections.abc import Callable, Coroutine
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

from bridge.config import Config
from bridge.core import callnotes
from bridge.dispatch.dispatcher import Dispatcher
from bridge.dispatch.session import DeviceSession, caps_of
from bridge.dispatch.tokens import TokenBook
from bridge.store.model import StoreUnavailable
from bridge.store.protocols import Store
from device_agents import protocol

log = logging.getLogger(__name__)


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes."""
    data = text.encode()[:120]
    return data.decode(errors="ignore")


class AgentConnection(ServerConnection):
    """A server connection that notes when it last heard from its agent: any
    bytes at all, its pings included (which the library answers on its own)."""

    heard = 0.0  # time.monotonic() of the last bytes received
    asked = False  # a ping is out to it because it went silent (AgentListener._ask)
    cut = False  # ... and it answered none: the connection was cut

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.heard = time.monotonic()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        super().data_received(data)


class AgentListener:
    def __init__(self, *, config: Config, store: Store, dispatcher: Dispatcher, tokens: TokenBook,
                 ssl: ssl_module.SSLContext | None = None,
                 on_job_state: Callable[[str, str, str], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.tokens = tokens
        self.ssl = ssl
        self.server: Any = None
        self._closing: set[asyncio.Task[Any]] = set()  # work in the background (see _in_background)
        # Called with (device id, job id, job state) for each job state an agent
        # reports (metrics); a report sent again (lost ack) comes again.
        self.on_job_state = on_job_state
        self.rejected = 0
        self.turned_away = 0  # connections refused because too many were still saying hello
        self._unauthenticated = 0
        self._watch: asyncio.Task[None] | None = None
        self.silent_closed = 0  # sessions cut because their silent agent answered no ping

    def reload(self, config: Config) -> None:
        """A new configuration (SIGHUP): sessions of devices still configured
        stay up and follow their new settings (an agent that keeps caps is told
        changed ones: its welcome told the old ones); the others are closed."""
        self.config = config
        for device_id, session in list(self.dispatcher.sessions.items()):
            device = config.device(device_id)
            if device is None:
                self._close_soon(session, "device removed from the configuration")
            elif device.account != session.device.account:
                self._close_soon(session, "device moved to another account; reconnect")
            else:
                if session.hello.capabilities.keeps_caps and caps_of(device) != caps_of(session.device):
                    self._tell_caps(session, caps_of(device))  # its agent keeps the caps of its welcome
                session.device = device

    async def token_keys(self, device_id: str) -> list[bytes]:
        """The HMAC keys a hello of ``device_id`` may prove: each paired token
        (``simbridge pair``, not revoked; stored as its SHA-256, which is the
        key) and the device's derived/fixed token (in-daemon agents, config
        pushed over USB)."""
        digests, generation = await self.store.device_auth(device_id)
        self.tokens.set_generation(device_id, generation)
        return [bytes.fromhex(d) for d in digests] + [protocol.token_key(self.tokens.token_for(device_id))]

    async def authenticated(self, hello: protocol.Hello, nonce: str) -> bytes | None:
        """The key the hello's proof was made with, or None."""
        found = None
        for key in await self.token_keys(hello.device_id):
            if protocol.proof_ok(hello.proof, key, hello.device_id, nonce):
                found = key  # no early exit: the same work whichever key matches
        return found

    async def recheck(self, device_id: str) -> bool:
        """Close the device's live session if the token it proved is no
        longer valid (revoked); True if a session was closed."""
        session = self.dispatcher.sessions.get(device_id)
        if session is None or session.closed:
            return False
        if session.auth_key in await self.token_keys(device_id):
            return False
        self.rejected += 1
        log.warning("device %s: token revoked; session closed", device_id)
        await session.ws.close(protocol.CLOSE_POLICY, protocol.AUTH_FAILED)
        return True

    def _tell_caps(self, session: DeviceSession, caps: protocol.Caps) -> None:
        """New caps to an agent that keeps them (a frame only such an agent is sent)."""
        log.info("device %s: caps changed; telling its agent", session.device_id)
        self._in_background(self._send_caps(session, caps))

    @staticmethod
    async def _send_caps(session: DeviceSession, caps: protocol.Caps) -> None:
        with contextlib.suppress(Exception):  # a session going away: its next welcome tells them
            await session.ws.send(protocol.encode(protocol.NewCaps(caps=caps)))

    def _close_soon(self, session: DeviceSession, why: str) -> None:
        log.info("device %s: %s; closing its session", session.device_id, why)
        self._in_background(session.ws.close(protocol.CLOSE_POLICY, _reason(why)))

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on its own, kept referenced until done (a reload does not wait for it)."""
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def start(self) -> None:
        host, port = self.config.agents.listen
        # No keepalive of the library's own: _watch_silence pings only agents gone quiet.
        self.server = await serve(self._handle, host, port, max_size=protocol.MAX_FRAME_BYTES,
                                  ssl=self.ssl, compression=None, ping_interval=None,
                                  create_connection=AgentConnection)
        self._watch = asyncio.get_running_loop().create_task(self._watch_silence())

    async def _watch_silence(self) -> None:
        """Every quarter of ``silence_s``, ping each agent not heard from for
        ``silence_s`` (an agent that pings and reports, as ours do, never is)."""
        while True:
            silence = self.config.agents.silence_s  # a reload may change it
            await asyncio.sleep(silence / 4)
            quiet_since = time.monotonic() - silence
            for session in list(self.dispatcher.sessions.values()):
                ws = session.ws
                if ws.heard < quiet_since and not ws.asked:
                    ws.asked = True
                    self._in_background(self._ask(session, silence))

    async def _ask(self, session: DeviceSession, silence: float) -> None:
        """Ping a silent agent; no pong within a third of ``silence`` cuts its connection."""
        ws = session.ws
        try:
            pong = await ws.ping()
            async with asyncio.timeout(silence / 3):
                await pong
        except TimeoutError:
            # Cut, not closed: a closing handshake would wait for the peer that just failed to answer.
            self.silent_closed += 1
            ws.cut = True
            log.warning("device %s: nothing heard for %g s and no pong within %g s; connection cut",
                        session.device_id, silence, silence / 3)
            ws.transport.abort()
        except websockets.ConnectionClosed:
            pass
        finally:
            ws.asked = False

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    async def _refuse(self, ws: ServerConnection, why: str, device: str = "?") -> None:
        self.rejected += 1
        log.warning("agent session from %s (device %s) closed: %s", ws.remote_address, device, why)
        await ws.close(protocol.CLOSE_POLICY, _reason(why))

    async def _auth_failed(self, ws: ServerConnection, why: str, device: str) -> None:
        """Every authentication failure looks the same from outside."""
        self.rejected += 1
        log.warning("agent session from %s (device %s) refused: %s", ws.remote_address, device, why)
        await ws.close(protocol.CLOSE_POLICY, protocol.AUTH_FAILED)

    async def _say_hello(self, ws: ServerConnection) -> tuple[protocol.Hello, bytes] | None:
        """Challenge, hello, proof: the authenticated hello and its key, or
        None when the connection was closed."""
        limit = self.config.agents.hello_timeout_s
        nonce = secrets.token_hex(32)
        try:
            async with asyncio.timeout(limit):
                await ws.send(protocol.encode(protocol.Challenge(nonce=nonce)))
                first = await ws.recv()
            hello = protocol.decode(first, allowed=protocol.AGENT_TO_BRIDGE)
        except TimeoutError:
            await self._refuse(ws, f"no hello within {limit:g} s")
            return None
        except protocol.RemoteProtocolError as exc:
            await self._refuse(ws, f"bad hello: {exc}")
            return None
        except websockets.ConnectionClosed:
            return None
        if not isinstance(hello, protocol.Hello):
            await self._refuse(ws, f"expected hello, got {hello.type}")
            return None
        if hello.version != protocol.PROTOCOL_VERSION:
            await self._refuse(ws, f"unsupported protocol version {hello.version} "
                                   f"(this bridge speaks {protocol.PROTOCOL_VERSION}); update the agent",
                               hello.device_id)
            return None
        device = self.config.device(hello.device_id)
        key = await self.authenticated(hello, nonce) if device is not None else None
        if key is None:
            await self._auth_failed(ws, "unknown device" if device is None else "wrong token proof",
                                    hello.device_id)
            return None
        return hello, key

    async def _handle(self, ws: ServerConnection) -> None:
        if self._unauthenticated >= self.config.agents.max_unauthenticated:
            self.turned_away += 1
            if self.turned_away == 1 or self.turned_away % 1000 == 0:
                log.warning("agent listener: %d connections still saying hello; turning new ones away "
                            "(%d so far)", self._unauthenticated, self.turned_away)
            await ws.close(protocol.CLOSE_TRY_LATER, "too many connections saying hello; try again later")
            return
        self._unauthenticated += 1
        try:
            said = await self._say_hello(ws)
        finally:
            self._unauthenticated -= 1
        if said is None:
            return
        hello, key = said
        device = self.config.device(hello.device_id)
        if device is None:  # removed by a reload while it was saying hello
            await self._auth_failed(ws, "unknown device", hello.device_id)
            return
        window = min(hello.window, self.config.agents.window)
        session = DeviceSession(device=device, ws=ws, hello=hello, window=window, auth_key=key)
        await ws.send(protocol.encode(protocol.Welcome(device_id=device.id, window=window,
                                                       lease_s=self.config.agents.lease_s,
                                                       server_time=time.time(), caps=caps_of(device))))
        log.info("device %s connected (%s, journal %s, window %d, %d ledger entries)", device.id,
                 hello.agent or "agent", hello.journal or "without id", window, len(hello.ledger))
        reason = "disconnected"
        try:
            await self.dispatcher.attach(session)
            async for frame in ws:
                message = protocol.decode(frame, allowed=protocol.AGENT_TO_BRIDGE)
                await self._on_message(session, message)
        except protocol.RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
            await self._refuse(ws, str(exc), device.id)
        except StoreUnavailable as exc:  # nothing acked: the agent keeps its events and comes back
            reason = f"the store takes no writes ({exc})"
            await ws.close(protocol.CLOSE_TRY_LATER, "the store takes no writes; try again later")
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == protocol.CLOSE_TOO_BIG:
                reason = "frame too big"
            elif exc.sent is not None and exc.sent.code == protocol.CLOSE_TOO_BIG:
                reason = "frame too big"
                log.warning("device %s: frame over %d bytes; session closed (1009)",
                            device.id, protocol.MAX_FRAME_BYTES)
        finally:
            if session.ws.cut:  # (an AgentConnection: see start)
                reason = f"silent for {self.config.agents.silence_s:g} s and no pong to a ping"
            self.dispatcher.detach(session, reason)
            log.info("device %s offline: %s", device.id, reason)

    async def _on_message(self, session: DeviceSession, message: protocol.Message) -> None:
        if isinstance(message, protocol.Events):
            account = self.config.account(session.account)
            events = callnotes.rewrite(message.events, account.call_note_senders, self.config.api.default_region) \
                if account is not None and account.call_note_senders else message.events
            outcome = await self.store.apply_events(session.device_id, session.account, events,
                                                    max_attempts=self.config.dispatcher.max_attempts,
                                                    journal=session.hello.journal)
            if self.on_job_state is not None:
                for event in message.events:
                    if isinstance(event, protocol.JobState):
                        self.on_job_state(session.device_id, event.job_id, event.state)
            self.dispatcher.health[session.device_id].last_seen = time.time()
            with contextlib.suppress(websockets.ConnectionClosed):
                await session.ws.send(protocol.encode(protocol.Ack(event_ids=tuple(outcome.acked))))
            if outcome.requeued:
                self.dispatcher.wake()
            self.dispatcher.finished(session, outcome.finished)
        elif isinstance(message, protocol.Status):
            session.status = message
            health = self.dispatcher.health[session.device_id]
            health.status = message
            health.last_seen = time.time()
        elif isinstance(message, protocol.Hello):
            raise protocol.RemoteProtocolError("hello sent twice")
