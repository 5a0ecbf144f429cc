"""The serial side of a modem: pyserial in a thread, the AT engine on the loop.

:class:`SerialLink` only moves bytes. A reader thread blocks in pyserial's
``read`` and hands whatever arrives to the event loop, where the sans-I/O
:class:`~device_agents.modem.at.AtEngine` turns it into events; writes go
through a worker thread too, so the event loop never blocks on the port.

Commands go one at a time (an :class:`asyncio.Lock`, as bellows'
``MAX_COMMAND_CONCURRENCY = 1``), each under :func:`asyncio.timeout`; the
waiter is registered before the bytes are written. "SIM busy"
(``+CME ERROR: 14``, ``515``, ``+CMS ERROR: 314``) is retried with async
backoff. Unsolicited result codes go to ``on_urc`` as they arrive, even in
the middle of a reply.

The port going away (a USB unplug: pyserial raises, or the device reports
readiness and returns no data) sets :attr:`SerialLink.lost` and fails the
command in progress with :class:`LinkLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .at import AtEngine, Discarded, FinalResult, InfoLine, Prompt, ResultKind, Urc

log = logging.getLogger(__name__)

BUSY_CME = frozenset({14, 515})  # SIM busy; "please wait, init or command processing in progress"
BUSY_CMS = frozenset({314})  # SIM busy
READ_CHUNK = 4096


class LinkError(Exception):
    """Base of the link's errors. ``uncertain``: a PDU had been written when
    it happened, so the modem may have transmitted it."""

    uncertain: bool = False


class LinkLost(LinkError):
    """The port went away (unplugged, closed) or could not be opened."""


class CommandTimeout(LinkError):
    """No final result within the command's time."""


class CommandError(LinkError):
    """The modem answered with an error final result."""

    def __init__(self, command: str, final: FinalResult) -> None:
        super().__init__(f"{command.split('=')[0]}: {final.text or final.kind.value}")
        self.command = command
        self.final = final

    @property
    def code(self) -> int | None:
        return self.final.code

    def is_cme(self, *codes: int) -> bool:
        return self.final.kind is ResultKind.CME and self.final.code in codes


@dataclass(frozen=True, slots=True)
class Reply:
    lines: tuple[str, ...]
    final: FinalResult

    def info(self, prefix: str) -> list[str]:
        """The lines that start with ``prefix`` (e.g. ``"+CSQ:"``)."""
        return [line for line in self.lines if line.upper().startswith(prefix.upper())]


def is_busy(final: FinalResult) -> bool:
    return (final.kind is ResultKind.CME and final.code in BUSY_CME) or \
        (final.kind is ResultKind.CMS and final.code in BUSY_CMS)


def open_serial(port: str, baudrate: int) -> Any:
    """Open ``port`` with pyserial (blocking: call it in a thread)."""
    import serial

    ser = serial.Serial()
    ser.port = port
    ser.baudrate = baudrate
    ser.timeout = 0.5
    ser.write_timeout = 10
    ser.exclusive = True
    ser.open()
    return ser


class SerialLink:
    def __init__(self, port: str, *, baudrate: int = 115200, on_urc: Callable[[Urc], None] | None = None,
                 command_timeout: float = 10.0, busy_retries: int = 6,
                 opener: Callable[[str, int], Any] = open_serial,
                 logger: logging.LoggerAdapter[logging.Logger] | logging.Logger | None = None) -> None:
        self.port = port
        self.baudrate = baudrate
        self.on_urc = on_urc
        self.command_timeout = command_timeout
        self.busy_retries = busy_retries
        self.engine = AtEngine()
        self.log = logger or log
        self._opener = opener
        self._serial: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._final: asyncio.Future[Reply] | None = None
        self._prompt: asyncio.Future[None] | None = None
        self._lines: list[str] = []
        self.lost: asyncio.Future[BaseException] | None = None
        self.commands = 0

    # -- life cycle -----------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.lost = self._loop.create_future()
        try:
            self._serial = await asyncio.to_thread(self._opener, self.port, self.baudrate)
        except Exception as exc:  # SerialException, OSError: not there (yet)
            raise LinkLost(f"cannot open {self.port}: {exc}") from exc
        self._thread = threading.Thread(target=self._reader, name=f"modem-reader {self.port}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stopping = True
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.cancel_read()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
            self._thread = None
        if ser is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(ser.close)
        self._set_lost(LinkLost("closed"))

    @property
    def alive(self) -> bool:
        return self.lost is not None and not self.lost.done()

    # -- the reader thread ------------------------------------------------------

    def _reader(self) -> None:
        ser, loop = self._serial, self._loop
        assert loop is not None
        try:
            while not self._stopping:
                data = ser.read(min(max(ser.in_waiting, 1), READ_CHUNK))
                if data:
                    loop.call_soon_threadsafe(self._on_data, data)
        except Exception as exc:  # noqa: BLE001 - any failure of the port means: it is gone
            if not self._stopping:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(self._set_lost, LinkLost(f"{self.port}: {exc}"))

    def fail(self, exc: BaseException) -> None:
        """Declare the link gone (a modem that stays silent after a reset)."""
        self._set_lost(exc)

    def _set_lost(self, exc: BaseException) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(exc)
        for fut in (self._final, self._prompt):
            if fut is not None and not fut.done():
                fut.set_exception(exc)

    # -- incoming bytes (on the loop) -----------------------------------------------

    def _on_data(self, data: bytes) -> None:
        self.engine.feed(data)
        for event in self.engine.events():
            if isinstance(event, Urc):
                if self.on_urc is not None:
                    try:
                        self.on_urc(event)
                    except Exception:  # noqa: BLE001 - a handler bug must not wedge the link
                        self.log.exception("URC handler failed on %s", event.name)
            elif isinstance(event, InfoLine):
                self._lines.append(event.text)
            elif isinstance(event, FinalResult):
                if self._final is not None and not self._final.done():
                    self._final.set_result(Reply(tuple(self._lines), event))
            elif isinstance(event, Prompt):
                if self._prompt is not None and not self._prompt.done():
                    self._prompt.set_result(None)
            elif isinstance(event, Discarded):
                self.log.debug("modem: dropped %s: %r", event.reason, event.data)

    # -- commands ------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        ser = self._serial
        if ser is None or not self.alive:
            raise LinkLost(f"{self.port} is not open")
        try:
            await asyncio.to_thread(ser.write, data)
        except Exception as exc:  # noqa: BLE001
            err = LinkLost(f"{self.port}: write failed: {exc}")
            self._set_lost(err)
            raise err from exc

    async def command(self, command: str, *, timeout: float | None = None,  # noqa: ASYNC109 - per command
                      pdu: str | None = None, retry_busy: bool = True) -> Reply:
        """Run one command (and its PDU after the ``> `` prompt); the reply
        when it ends in OK, else :class:`CommandError`. Busy errors are
        retried with backoff."""
        delay = 0.2
        attempt = 0
        while True:
            reply = await self._once(command, timeout or self.command_timeout, pdu)
            if reply.final.ok:
                return reply
            if retry_busy and is_busy(reply.final) and attempt < self.busy_retries:
                attempt += 1
                self.log.debug("modem busy on %s; retrying in %.1f s", command.split("=")[0], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            raise CommandError(command, reply.final)

    async def _once(self, command: str, timeout: float, pdu: str | None) -> Reply:  # noqa: ASYNC109 - a per-command deadline, applied with asyncio.timeout
        async with self._lock:
            if not self.alive:
                raise LinkLost(f"{self.port} is not open")
            loop = asyncio.get_running_loop()
            self._lines = []
            final: asyncio.Future[Reply] = loop.create_future()
            prompt: asyncio.Future[None] | None = loop.create_future() if pdu is not None else None
            self._final, self._prompt = final, prompt
            pdu_written = False
            self.commands += 1
            try:
                async with asyncio.timeout(timeout):
                    await self._write(self.engine.send(command))
                    if pdu is not None:
                        assert prompt is not None
                        waiters: list[asyncio.Future[Any]] = [prompt, final]
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                        if final.done():  # an error instead of the prompt
                            return final.result()
                        prompt.result()
                        data = self.engine.send_pdu(pdu)
                        pdu_written = True
                        await self._write(data)
                    return await final
            except TimeoutError:
                with contextlib.suppress(Exception):
                    rest = self.engine.cancel()
                    if rest:
                        await self._write(rest)
                err = CommandTimeout(f"{command.split('=')[0]}: no answer within {timeout:g} s")
                err.uncertain = pdu_written
                raise err from None
            except LinkError as exc:
                exc.uncertain = pdu_written
                if self.engine.busy:
                    self.engine.cancel()
                raise
            except BaseException:
                # Cancelled (the daemon stopping): abandon the command safely. A
                # modem left at the "> " prompt would swallow what comes next, so
                # it gets its ESC before we go.
                if self.engine.busy:
                    rest = self.engine.cancel()
                    if rest and self.alive:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(self._write(rest))
                raise
            finally:
                for fut in (self._final, self._prompt):
                    if fut is not None and not fut.done():
                        fut.cancel()
                    elif fut is not None and not fut.cancelled():
                        fut.exception()  # retrieved: no "never retrieved" warning
                self._final = self._prompt = None
                self._lines = []

    async def write_raw(self, data: bytes) -> None:
        """Bytes outside any command (ESC, a bare CR) for a reset sequence."""
        async with self._lock:
            await self._write(data)
