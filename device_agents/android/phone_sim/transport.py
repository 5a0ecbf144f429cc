"""adbd's side of one adb transport over TCP: handshake, AUTH, and streams.

Sources (AOSP packages/modules/adb): ``protocol.txt`` (CNXN/AUTH/OPEN/OKAY/
WRTE/CLSE and their arguments), ``adb.cpp`` ``handle_packet`` (what a device
does on each message), ``daemon/auth.cpp`` (AUTH: a token is sent on CNXN; a
good signature brings the device online; otherwise a new token; a public key
from the host asks the user "Allow USB debugging?" and the device stays
``unauthorized`` in ``adb devices`` until they tap Allow), ``sockets.cpp``
(one write in flight per stream: the next WRTE waits for the peer's OKAY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import wire
from .adbkey import AdbPublicKey, BadKey

log = logging.getLogger(__name__)

StreamHandler = Callable[["Stream"], Awaitable[None]]


class StreamClosed(Exception):
    pass


class Stream:
    """One adb stream (a socket pair in adbd's terms) seen from the device."""

    def __init__(self, conn: AdbdConnection, local_id: int, remote_id: int, service: str) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._credit = asyncio.Event()
        self._credit.set()
        self._opened = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self.closed = False
        self.peer_closed = False

    # -- from the connection ----------------------------------------------------
    def _on_write(self, data: bytes) -> None:
        self._incoming.put_nowait(data)

    def _on_okay(self, remote_id: int) -> None:
        if not self._opened.done():
            self.remote_id = remote_id
            self._opened.set_result(True)
        self._credit.set()

    def _on_close(self) -> None:
        self.peer_closed = True
        self.closed = True
        if not self._opened.done():
            self._opened.set_result(False)
        self._incoming.put_nowait(None)
        self._credit.set()

    # -- for services -----------------------------------------------------------
    async def read(self) -> bytes:
        """Next chunk from the host; ``b""`` once the host closed the stream."""
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        chunk = await self._incoming.get()
        if chunk is None:
            self._incoming.put_nowait(None)
            return b""
        data = chunk
        # sockets.cpp: the device acknowledges a WRTE once it has taken the data.
        self.conn.send(wire.Message(wire.A_OKAY, self.local_id, self.remote_id))
        return data

    async def read_exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = await self.read()
            if not chunk:
                raise StreamClosed(f"stream closed after {len(out)} of {n} bytes")
            out += chunk
        self._buffer = out[n:] + self._buffer
        return out[:n]

    async def write(self, data: bytes) -> None:
        step = max(1, self.conn.max_payload)
        for start in range(0, len(data), step):
            await self._credit.wait()
            if self.closed:
                raise StreamClosed("stream closed by the host")
            self._credit.clear()
            self.conn.send(wire.Message(wire.A_WRTE, self.local_id, self.remote_id,
                                        data[start:start + step]))
        await self._credit.wait()

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.send(wire.Message(wire.A_CLSE, self.local_id, self.remote_id))
        self.conn.forget(self)


class AuthGate:
    """adbd's key store and the "Allow USB debugging?" dialog.

    ``daemon/auth.cpp``: the keys the user allowed with "Always allow from this
    computer" live in ``/data/misc/adb/adb_keys`` (here ``keys_file``); a key
    allowed once without "always" lasts until the connection drops."""

    def __init__(self, *, required: bool, keys_file: Path | None) -> None:
        self.required = required
        self.keys_file = keys_file
        self._keys: dict[str, AdbPublicKey] = {}
        self._session_keys: set[str] = set()
        self.pending: dict[str, AdbPublicKey] = {}
        self._waiters: dict[str, list[asyncio.Future[bool]]] = {}
        self.changed = asyncio.Event()
        if keys_file and keys_file.exists():
            for line in keys_file.read_text().splitlines():
                with contextlib.suppress(BadKey):
                    key = AdbPublicKey.parse(line.encode())
                    self._keys[key.text] = key

    def match(self, token: bytes, signature: bytes) -> bool:
        return any(k.verify(token, signature) for k in self._keys.values())

    def is_allowed(self, key: AdbPublicKey) -> bool:
        return key.text in self._keys or key.text in self._session_keys

    def ask(self, key: AdbPublicKey) -> asyncio.Future[bool]:
        """The dialog pops up; the future resolves when the user answers."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.is_allowed(key):
            fut.set_result(True)
            return fut
        self.pending[key.text] = key
        self._waiters.setdefault(key.text, []).append(fut)
        self.changed.set()
        return fut

    def answer(self, allow: bool, *, always: bool = True, key_text: str | None = None) -> int:
        """The user taps Allow (or Cancel) on the dialog; returns how many keys it answered."""
        texts = [key_text] if key_text else list(self.pending)
        for text in texts:
            key = self.pending.pop(text, None)
            if key is None:
                continue
            if allow:
                if always:
                    self._keys[text] = key
                    self._save()
                else:
                    self._session_keys.add(text)
            for fut in self._waiters.pop(text, []):
                if not fut.done():
                    fut.set_result(allow)
        return len(texts)

    def revoke_all(self) -> None:
        """Developer options → "Revoke USB debugging authorisations"."""
        self._keys.clear()
        self._session_keys.clear()
        self._save()

    def _save(self) -> None:
        if self.keys_file:
            self.keys_file.parent.mkdir(parents=True, exist_ok=True)
            self.keys_file.write_text("".join(f"{k.text} {k.comment}\n" for k in self._keys.values()))


class ServiceRouter:
    """What the device opens for a service name (``OPEN``'s payload)."""

    def open(self, name: str, conn: AdbdConnection) -> StreamHandler | None:  # pragma: no cover
        raise NotImplementedError


class AdbdConnection:
    """One host connection, in adbd's role."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 banner: Callable[[], str], auth: AuthGate, services: ServiceRouter,
                 name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.banner = banner
        self.auth = auth
        self.services = services
        self.name = name  # what adbd calls this transport ("host-N"; "UsbFfs" over USB)
        self.version = wire.A_VERSION
        self.max_payload = wire.MAX_PAYLOAD_V1
        self.online = False
        self.host_banner = ""
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._token = b""
        self._asked = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()

    # -- output -----------------------------------------------------------------
    def send(self, msg: wire.Message) -> None:
        if not self.writer.is_closing():
            log.debug("%s -> %s %d %d %d bytes", self.name, msg.name, msg.arg0, msg.arg1, len(msg.data))
            self.writer.write(msg.encode())

    def _send_connect(self) -> None:
        self.online = True
        self.send(wire.Message(wire.A_CNXN, self.version, self.max_payload,
                               self.banner().encode() + b"\0"))

    def _send_token(self) -> None:
        self._token = os.urandom(wire.TOKEN_SIZE)
        self.send(wire.Message(wire.A_AUTH, wire.ADB_AUTH_TOKEN, 0, self._token))

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- streams the device opens (adb reverse) -----------------------------------
    async def open_to_host(self, service: str) -> Stream | None:
        stream = self._new_stream(0, service)
        self.send(wire.Message(wire.A_OPEN, stream.local_id, 0, service.encode() + b"\0"))
        if not await stream._opened:
            self.forget(stream)
            return None
        return stream

    def _new_stream(self, remote_id: int, service: str) -> Stream:
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, remote_id, service)
        self._streams[local_id] = stream
        return stream

    def forget(self, stream: Stream) -> None:
        self._streams.pop(stream.local_id, None)

    # -- input ------------------------------------------------------------------
    async def run(self) -> None:
        parser = wire.Parser(max_payload=wire.MAX_PAYLOAD)
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for msg in parser.feed(data):
                    self._handle(msg)
                await self.writer.drain()
        except wire.RemoteProtocolError as exc:
            log.warning("%s: dropping the connection: %s", self.name, exc)
        except (ConnectionError, OSError):
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.online = False
        for stream in list(self._streams.values()):
            stream._on_close()
        self._streams.clear()
        for task in list(self._tasks):
            task.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def _handle(self, msg: wire.Message) -> None:
        log.debug("%s <- %s %d %d %d bytes", self.name, msg.name, msg.arg0, msg.arg1, len(msg.data))
        if msg.command == wire.A_CNXN:
            self._on_cnxn(msg)
        elif msg.command == wire.A_AUTH:
            self._on_auth(msg)
        elif not self.online:
            return  # adb.cpp: OPEN/WRTE/… before the device is online are ignored
        elif msg.command == wire.A_OPEN:
            self._on_open(msg)
        elif msg.command == wire.A_OKAY:
            stream = self._streams.get(msg.arg1)
            if stream is not None:
                stream._on_okay(msg.arg0)
        elif msg.command == wire.A_WRTE:
            stream = self._streams.get(msg.arg1)
            if stream is not None:
                stream._on_write(msg.data)
        elif msg.command == wire.A_CLSE:
            stream = self._streams.pop(msg.arg1, None)
            if stream is not None:
                stream._on_close()

    def _on_cnxn(self, msg: wire.Message) -> None:
        # adb.cpp handle_new_connection: version and max payload are the smaller of both ends'.
        self.version = min(msg.arg0, wire.A_VERSION)
        self.max_payload = min(msg.arg1, wire.MAX_PAYLOAD)
        self.host_banner = msg.data.rstrip(b"\0").decode("utf-8", "replace")
        for stream in list(self._streams.values()):
            stream._on_close()
        self._streams.clear()
        if not self.auth.required:
            self._send_connect()
        else:
            self.online = False
            self._send_token()

    def _on_auth(self, msg: wire.Message) -> None:
        if self.online or not self.auth.required:
            return
        if msg.arg0 == wire.ADB_AUTH_SIGNATURE:
            if self._token and self.auth.match(self._token, msg.data):
                self._send_connect()
            else:
                self._send_token()  # auth.cpp: a wrong signature gets a fresh token
        elif msg.arg0 == wire.ADB_AUTH_RSAPUBLICKEY:
            try:
                key = AdbPublicKey.parse(msg.data)
            except BadKey as exc:
                log.warning("%s: unusable adb key from the host: %s", self.name, exc)
                return
            if self._asked:
                return
            self._asked = True
            self.spawn(self._await_user(key))

    async def _await_user(self, key: AdbPublicKey) -> None:
        allowed = await self.auth.ask(key)
        self._asked = False
        if allowed and not self.closed.is_set():
            self._send_connect()

    def _on_open(self, msg: wire.Message) -> None:
        service = msg.data.rstrip(b"\0").decode("utf-8", "replace")
        if msg.arg0 == 0:
            return
        handler = self.services.open(service, self)
        if handler is None:
            self.send(wire.Message(wire.A_CLSE, 0, msg.arg0))
            return
        stream = self._new_stream(msg.arg0, service)
        self.send(wire.Message(wire.A_OKAY, stream.local_id, msg.arg0))
        self.spawn(self._serve(handler, stream))

    async def _serve(self, handler: StreamHandler, stream: Stream) -> None:
        try:
            await handler(stream)
        except StreamClosed:
            pass
        except Exception:
            log.exception("%s: service %r failed", self.name, stream.service)
        finally:
            await stream.close()
