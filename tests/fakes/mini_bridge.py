"""A tiny stand-in for the bridge's agent listener, for testing agents alone.

It speaks the device protocol (``device_agents.protocol``) over a real
websocket: checks the hello's token, answers ``welcome``, records and acks
events (unless told not to), records status frames, and lets the test push
jobs to the connected agent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.server import ServerConnection, serve

from device_agents import protocol

TIMEOUT_FACTOR = float(os.environ.get("SIMBRIDGE_TEST_TIMEOUT_FACTOR", "1"))


async def wait_until(condition: Callable[[], Any], within: float = 30.0, what: str = "condition") -> Any:
    """Wait for ``condition()`` to be truthy (no fixed sleeps: a short poll with a deadline)."""
    deadline = time.monotonic() + within * TIMEOUT_FACTOR
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class MiniBridge:
    def __init__(self, *, tokens: dict[str, str], lease_s: float = 60.0) -> None:
        self.tokens = tokens
        self.lease_s = lease_s
        self.ack = True
        self.hellos: list[protocol.Hello] = []
        self.events: list[protocol.Event] = []
        self.statuses: list[protocol.Status] = []
        self.sessions: dict[str, ServerConnection] = {}
        self.port = 0
        self._server: Any = None
        self.on_session: Callable[[str, bool], None] | None = None  # like the daemon's hook

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def __aenter__(self) -> MiniBridge:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=protocol.MAX_FRAME_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.close()
        await self._server.wait_closed()

    def connected(self, device_id: str) -> bool:
        return device_id in self.sessions

    def of_kind(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def job_states(self, job_id: str) -> list[str]:
        return [e.state for e in self.of_kind(protocol.JobState) if e.job_id == job_id]

    async def push(self, device_id: str, *jobs: protocol.Job) -> None:
        await self.sessions[device_id].send(protocol.encode(protocol.Jobs(jobs=tuple(jobs))))

    async def _handle(self, ws: ServerConnection) -> None:
        nonce = secrets.token_hex(32)
        await ws.send(protocol.encode(protocol.Challenge(nonce=nonce)))
        hello = protocol.decode(await ws.recv(), allowed=frozenset({"hello"}))
        assert isinstance(hello, protocol.Hello)
        token = self.tokens.get(hello.device_id)
        if token is None or not protocol.proof_ok(hello.proof, protocol.token_key(token), hello.device_id, nonce):
            await ws.close(protocol.CLOSE_POLICY, protocol.AUTH_FAILED)
            return
        self.hellos.append(hello)
        await ws.send(protocol.encode(protocol.Welcome(device_id=hello.device_id, window=hello.window,
                                                       lease_s=self.lease_s, server_time=time.time())))
        self.sessions[hello.device_id] = ws
        if self.on_session:
            self.on_session(hello.device_id, True)
        try:
            async for frame in ws:
                msg = protocol.decode(frame, allowed=protocol.AGENT_TO_BRIDGE)
                if isinstance(msg, protocol.Events):
                    self.events.extend(msg.events)
                    if self.ack:
                        await ws.send(protocol.encode(protocol.Ack(
                            event_ids=tuple(e.event_id for e in msg.events))))
                elif isinstance(msg, protocol.Status):
                    self.statuses.append(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.sessions.get(hello.device_id) is ws:
                del self.sessions[hello.device_id]
                if self.on_session:
                    self.on_session(hello.device_id, False)
