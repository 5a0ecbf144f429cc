"""The agent listener: one websocket per device, speaking device_agents.protocol.

A bad frame or a bad token closes *that* session with a policy code (1008,
or 1009 for a frame over the size limit) and a logged reason; every other
session and the API carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

from bridge.config import Config
from bridge.dispatch.dispatcher import DeviceSession, Dispatcher
from bridge.dispatch.tokens import TokenBook, token_digest
from bridge.store.protocols import Store
from device_agents import protocol

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes."""
    data = text.encode()[:120]
    return data.decode(errors="ignore")


class AgentListener:
    def __init__(self, *, config: Config, store: Store, dispatcher: Dispatcher, tokens: TokenBook,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.tokens = tokens
        self.ssl = ssl
        self.server: Any = None
        self._closing: set[asyncio.Task[Any]] = set()
        self.on_status: Callable[[str, protocol.Status], None] | None = None
        # Called with (device id, job id, job state) for each job state an agent
        # reports (metrics); a report sent again (lost ack) comes again.
        self.on_job_state: Callable[[str, str, str], None] | None = None
        self.rejected = 0

    def reload(self, config: Config) -> None:
        """A new configuration (SIGHUP): sessions of devices still configured
        stay up and follow their new settings; the others are closed."""
        self.config = config
        for device_id, session in list(self.dispatcher.sessions.items()):
            device = config.device(device_id)
            if device is None:
                self._close_soon(session, "device removed from the configuration")
            elif device.account != session.device.account:
                self._close_soon(session, "device moved to another account; reconnect")
            else:
                session.device = device

    async def token_ok(self, device_id: str, token: str) -> bool:
        """A paired token (``simbridge pair``, not revoked), or the device's
        derived/fixed token (in-daemon agents, config pushed over USB)."""
        digests, generation = await self.store.device_auth(device_id)
        self.tokens.set_generation(device_id, generation)
        return token_digest(token) in digests or self.tokens.verify(device_id, token)

    async def recheck(self, device_id: str) -> bool:
        """Close the device's live session if its token is no longer valid
        (revoked); True if a session was closed."""
        session = self.dispatcher.sessions.get(device_id)
        if session is None or session.closed:
            return False
        if await self.token_ok(device_id, session.hello.token):
            return False
        self.rejected += 1
        log.warning("device %s: token revoked; session closed", device_id)
        await session.ws.close(protocol.CLOSE_POLICY, "token revoked")
        return True

    def _close_soon(self, session: DeviceSession, why: str) -> None:
        log.info("device %s: %s; closing its session", session.device_id, why)
        task = asyncio.get_running_loop().create_task(session.ws.close(protocol.CLOSE_POLICY, _reason(why)))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def start(self) -> None:
        host, port = self.config.agents.listen
        self.server = await serve(self._handle, host, port, max_size=protocol.MAX_FRAME_BYTES,
                                  ssl=self.ssl, compression=None, ping_interval=20, ping_timeout=20)

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()

    async def _refuse(self, ws: ServerConnection, why: str, device: str = "?") -> None:
        self.rejected += 1
        log.warning("agent session from %s (device %s) closed: %s", ws.remote_address, device, why)
        await ws.close(protocol.CLOSE_POLICY, _reason(why))

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                first = await ws.recv()
            hello = protocol.decode(first, allowed=protocol.AGENT_TO_BRIDGE)
        except TimeoutError:
            await self._refuse(ws, f"no hello within {HELLO_TIMEOUT:g} s")
            return
        except protocol.RemoteProtocolError as exc:
            await self._refuse(ws, f"bad hello: {exc}")
            return
        except websockets.ConnectionClosed:
            return
        if not isinstance(hello, protocol.Hello):
            await self._refuse(ws, f"expected hello, got {hello.type}")
            return
        device = self.config.device(hello.device_id)
        if device is None:
            await self._refuse(ws, f"unknown device {hello.device_id!r}", hello.device_id)
            return
        if not await self.token_ok(device.id, hello.token):
            await self._refuse(ws, "bad token", device.id)
            return
        if hello.version != protocol.PROTOCOL_VERSION:
            await self._refuse(ws, f"unsupported protocol version {hello.version} "
                                   f"(this bridge speaks {protocol.PROTOCOL_VERSION})", device.id)
            return
        window = min(hello.window, self.config.agents.window)
        session = DeviceSession(device=device, ws=ws, hello=hello, window=window)
        await ws.send(protocol.encode(protocol.Welcome(device_id=device.id, window=window,
                                                       lease_s=self.config.agents.lease_s,
                                                       server_time=time.time())))
        log.info("device %s connected (%s, window %d, %d ledger entries)", device.id,
                 hello.agent or "agent", window, len(hello.ledger))
        reason = "disconnected"
        try:
            await self.dispatcher.attach(session)
            async for frame in ws:
                message = protocol.decode(frame, allowed=protocol.AGENT_TO_BRIDGE)
                await self._on_message(session, message)
        except protocol.RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
            await self._refuse(ws, str(exc), device.id)
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == protocol.CLOSE_TOO_BIG:
                reason = "frame too big"
            elif exc.sent is not None and exc.sent.code == protocol.CLOSE_TOO_BIG:
                reason = "frame too big"
                log.warning("device %s: frame over %d bytes; session closed (1009)",
                            device.id, protocol.MAX_FRAME_BYTES)
        finally:
            self.dispatcher.detach(session, reason)
            log.info("device %s offline: %s", device.id, reason)

    async def _on_message(self, session: DeviceSession, message: protocol.Message) -> None:
        if isinstance(message, protocol.Events):
            outcome = await self.store.apply_events(session.device_id, session.account, message.events,
                                                    max_attempts=self.config.dispatcher.max_attempts)
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
            if self.on_status is not None:
                self.on_status(session.device_id, message)
        elif isinstance(message, protocol.Hello):
            raise protocol.RemoteProtocolError("hello sent twice")
