"""A virtual GSM modem on a real pseudo-terminal.

It speaks the AT subset of docs/modem.md (TS 27.007 / 27.005, PDU mode) on
the master side of ``os.openpty()``; drivers open the slave (``/dev/pts/N``,
or the ``link`` symlink to it) exactly as they would a USB modem — pyserial,
gammu, minicom.

I/O model: everything runs on one asyncio event loop. The pty master is
watched with ``loop.add_reader``; timers (status reports, rings, reply
latency, unplug) are ``call_later`` handles or small tasks. All state is
touched from that loop only. :meth:`VirtualModem.start` runs the loop in a
background thread for synchronous tests (pyserial is blocking), and the
public control methods (:meth:`incoming_sms`, :meth:`call`, :meth:`fault_*`)
may be called from any thread: they hop onto the loop and wait.
``sim_cli`` runs the same loop in the foreground with a JSON-lines control
socket.

PDUs are encoded and decoded by :mod:`device_agents.modem.pdu` only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import fcntl
import json
import logging
import os
import random
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from device_agents.modem import gsm7, pdu
from device_agents.modem.at import split_args

log = logging.getLogger(__name__)

__all__ = [
    "CALL_TRANSITIONS",
    "CallRecord",
    "CallState",
    "PtyPort",
    "SimCard",
    "StoredMessage",
    "Transmission",
    "VirtualModem",
]

MAX_COMMAND_LINE: Final = 1024
MAX_PDU_HEX: Final = 2 * 200
CTRL_Z: Final = 0x1A
ESC: Final = 0x1B

# --------------------------------------------------------------------------
# records


@dataclass(frozen=True, slots=True)
class Transmission:
    """One SMS the modem put on the air (one PDU: a part of a long message).

    Written to the radio log as a JSON line with ``kind: "sms"``."""

    to: str
    text: str
    at: str  # ISO 8601, UTC
    reference: int  # TP-MR answered in +CMGS
    report_requested: bool = False
    concat: dict[str, int] | None = None  # {"ref", "total", "seq"} for a part
    kind: str = "sms"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call that ended; written to the radio log with ``kind: "call"``."""

    direction: str  # "in" | "out"
    number: str
    at: str
    answered: bool
    duration: float
    kind: str = "call"


@dataclass(slots=True)
class StoredMessage:
    """A slot of the SIM storage: stat as in AT+CMGL (0 REC UNREAD, 1 REC
    READ, 2 STO UNSENT, 3 STO SENT) and the PDU with its SMSC octets."""

    stat: int
    pdu: bytes
    tpdu_length: int


# --------------------------------------------------------------------------
# call state, as data


class CallState(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"  # incoming, alerting the DTE with RING
    DIALLING = "dialling"  # outgoing, the far end has not answered yet
    ACTIVE = "active"


CALL_TRANSITIONS: Final[dict[CallState, dict[str, CallState]]] = {
    CallState.IDLE: {"incoming": CallState.RINGING, "dial": CallState.DIALLING},
    CallState.RINGING: {
        "answer": CallState.ACTIVE,  # ATA
        "hangup": CallState.IDLE,  # ATH / AT+CHUP: rejected
        "remote-hangup": CallState.IDLE,  # the caller gave up: missed
    },
    CallState.DIALLING: {
        "remote-answer": CallState.ACTIVE,
        "hangup": CallState.IDLE,
        "remote-hangup": CallState.IDLE,
    },
    CallState.ACTIVE: {"hangup": CallState.IDLE, "remote-hangup": CallState.IDLE},
}


@dataclass(slots=True)
class _Call:
    direction: str
    number: str
    started: float
    answered_at: float | None = None
    duration: float | None = None  # incoming: how long the caller talks once answered
    missed: bool = False
    rings: int = 0
    timer: asyncio.TimerHandle | None = None


# --------------------------------------------------------------------------
# errors a command handler raises


class _CommandError(Exception):
    """Ends the command line with an error result."""

    def __init__(self, kind: str, code: int) -> None:
        super().__init__(kind, code)
        self.kind = kind  # "CME" | "CMS" | "ERROR"
        self.code = code


def _cme(code: int) -> _CommandError:
    return _CommandError("CME", code)


def _cms(code: int) -> _CommandError:
    return _CommandError("CMS", code)


_ERROR = _CommandError("ERROR", 0)

_CME_TEXT: Final = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    16: "incorrect password",
    21: "invalid index",
    30: "no network service",
    100: "unknown",
}
_CMS_TEXT: Final = {
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    311: "SIM PIN required",
    316: "SIM PUK required",
    321: "invalid memory index",
    322: "memory full",
    331: "no network service",
    500: "unknown error",
}


@dataclass(slots=True)
class _Reply:
    lines: list[str] = field(default_factory=list)
    prompt: bool = False  # answer "> " and read a PDU
    final: str = "OK"
    after: Callable[[], None] | None = None  # run once the final result is out


@dataclass(slots=True)
class _Settings:
    """What a reboot (or ATZ / AT&F) puts back to its default."""

    echo: bool = True
    cmee: int = 0
    cmgf: int = 0
    cscs: str = "IRA"
    cnmi: tuple[int, int, int, int, int] = (2, 1, 0, 0, 0)
    csms: int = 0
    clip: int = 0
    crc: int = 0
    creg: int = 0
    cgreg: int = 0
    cereg: int = 0
    cops_format: int = 0
    fun: int = 1


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_scts() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _toa(number: str) -> int:
    return 145 if number.startswith("+") else 129


def _split_args(text: str) -> list[str]:
    """``1,"SM",,3`` → ["1", "SM", "", "3"] (quotes removed; a modem is lenient
    about an unclosed quote)."""
    return split_args(text)[0]


def _int_args(text: str, *, count: int | None = None) -> list[int]:
    try:
        values = [int(a) if a else 0 for a in _split_args(text)]
    except ValueError:
        raise _ERROR from None
    if count is not None and len(values) > count:
        raise _ERROR
    return values


def split_command_line(body: str) -> list[tuple[str, str]]:
    """Split what follows ``AT`` into (name, rest) pairs.

    ``E0V1+CMGF=0;+CNMI=2,1`` → [("E", "0"), ("V", "1"), ("+CMGF", "=0"),
    ("+CNMI", "=2,1")]. ``D`` takes the rest of the line. Raises ValueError
    on what V.250 does not allow.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c in " ;":
            i += 1
        elif c in "+^*$%#":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] == "_"):
                j += 1
            k, quoted = j, False
            while k < n and (quoted or body[k] != ";"):
                if body[k] == '"':
                    quoted = not quoted
                k += 1
            out.append((body[i:j].upper(), body[j:k].strip()))
            i = k
        elif c in "Dd":
            out.append(("D", body[i + 1 :].strip()))
            break
        elif c == "&" and i + 1 < n and body[i + 1].isalpha():
            j = i + 2
            while j < n and body[j].isdigit():
                j += 1
            out.append(("&" + body[i + 1].upper(), body[i + 2 : j]))
            i = j
        elif c in "Ss":
            j = i + 1
            while j < n and (body[j].isdigit() or body[j] in "=?"):
                j += 1
            out.append(("S", body[i + 1 : j]))
            i = j
        elif c.isalpha():
            j = i + 1
            while j < n and body[j].isdigit():
                j += 1
            out.append((c.upper(), body[i + 1 : j]))
            i = j
        else:
            raise ValueError(f"unexpected {c!r} in command line")
    return out


# --------------------------------------------------------------------------
# the SIM: what survives reboots and unplugs


@dataclass(slots=True)
class SimCard:
    """PIN state and message storage. ``state`` is what AT+CPIN? says."""

    pin: str | None = None
    puk: str = "12345678"
    capacity: int = 30
    tries: int = 3
    state: str = ""
    storage: dict[int, StoredMessage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.state or ("SIM PIN" if self.pin else "READY")

    def power_cycle(self) -> None:
        """A PIN-protected SIM locks again when the modem restarts."""
        if self.pin and self.state == "READY":
            self.state = "SIM PIN"

    def enter(self, args: list[str]) -> None:
        """AT+CPIN="<pin>" or AT+CPIN="<puk>","<new pin>"; three wrong PINs block."""
        if self.state == "READY":
            raise _cme(3)
        if self.state == "SIM PUK":
            if len(args) != 2 or args[0] != self.puk:
                raise _cme(16)
            self.pin = args[1]
        elif args[0] != self.pin:
            self.tries -= 1
            if self.tries <= 0:
                self.state = "SIM PUK"
            raise _cme(16)
        self.tries = 3
        self.state = "READY"

    def store(self, stat: int, data: bytes, tpdu_length: int) -> int | None:
        """Put a PDU in the first free slot; None when full."""
        for index in range(1, self.capacity + 1):
            if index not in self.storage:
                self.storage[index] = StoredMessage(stat, data, tpdu_length)
                return index
        return None


# --------------------------------------------------------------------------
# the I/O edge


class PtyPort:
    """A pty whose master side the loop watches, and a symlink to its slave.

    Only moves bytes: ``on_data`` gets what the driver wrote, :meth:`write`
    queues what the modem says. The slave is set raw at once (no line
    discipline echo before a driver opens it) and kept open by us, so a
    driver closing the port never hangs up the master. Writes that would
    block wait for ``add_writer``; the queue keeps the newest 256 KiB, like a
    UART overrun when nobody reads.
    """

    MAX_QUEUE: Final = 256 * 1024

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, link: Path | None, on_data: Callable[[bytes], None]
    ) -> None:
        self._loop = loop
        self.link = link
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self._out = bytearray()
        self._writer_on = False
        self.name: str | None = None

    def open(self) -> str:
        if self.link is not None and self.link.exists() and not self.link.is_symlink():
            raise FileExistsError(f"{self.link} exists and is not a symlink: not replacing it")
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        for fd in (master, slave):
            fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        self._master, self._slave = master, slave
        self.name = os.ttyname(slave)
        if self.link is not None:  # atomically (re)point the link
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(self.name, tmp)
            os.replace(tmp, self.link)
        self._loop.add_reader(master, self._readable)
        return self.name

    def close(self) -> None:
        if self._master is not None:
            self._loop.remove_reader(self._master)
            if self._writer_on:
                self._loop.remove_writer(self._master)
                self._writer_on = False
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._out.clear()
        if self.link is not None:
            with contextlib.suppress(OSError):
                if self.link.is_symlink() and os.readlink(self.link) == self.name:
                    self.link.unlink()

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                log.warning("pty read failed: %s", exc)
            return
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        if self._master is None:
            return
        self._out += data
        if len(self._out) > self.MAX_QUEUE:
            del self._out[: len(self._out) - self.MAX_QUEUE]
        self._flush()

    def _flush(self) -> None:
        assert self._master is not None
        while self._out:
            try:
                n = os.write(self._master, self._out)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("pty write failed: %s", exc)
                self._out.clear()
                break
            del self._out[:n]
        if self._out and not self._writer_on:
            self._loop.add_writer(self._master, self._flush)
            self._writer_on = True
        elif not self._out and self._writer_on:
            self._loop.remove_writer(self._master)
            self._writer_on = False


# --------------------------------------------------------------------------
# the modem


class VirtualModem:
    """A GSM modem on a pty. See the module docstring and docs/modem.md."""

    manufacturer = "SIMBRIDGE"
    model = "VM-1"
    revision = "simbridge-vm 0.1.0"

    def __init__(
        self,
        *,
        link: str | os.PathLike[str] | None = None,
        number: str = "+33600000000",
        pin: str | None = None,
        puk: str = "12345678",
        report_delay: float = 1.0,
        latency: float = 0.0,
        radio_log: str | os.PathLike[str] | None = None,
        capacity: int = 30,
        smsc: str = "+33689004000",
        operator: str = "SIMBRIDGE",
        operator_code: str = "20801",
        imei: str = "356938035643809",
        imsi: str = "208019876543210",
        iccid: str = "8933010000000000001",
        rssi: int = 21,
        ring_interval: float = 1.0,
        missed_rings: int = 2,
        max_rings: int = 6,
        answer_delay: float = 0.5,
        boot_delay: float = 0.05,
        seed: int | None = None,
    ) -> None:
        self.link = Path(link) if link is not None else None
        self.number = number
        self.report_delay = report_delay
        self.latency = latency
        self.radio_log = Path(radio_log) if radio_log is not None else None
        self.smsc = smsc
        self.operator = operator
        self.operator_code = operator_code
        self.imei = imei
        self.imsi = imsi
        self.iccid = iccid
        self.rssi = rssi
        self.ring_interval = ring_interval
        self.missed_rings = missed_rings
        self.max_rings = max_rings
        self.answer_delay = answer_delay
        self.boot_delay = boot_delay
        self._random = random.Random(seed)

        self.sim = SimCard(pin=pin, puk=puk, capacity=capacity)  # survives reboots and unplugs
        # observable history
        self.transmissions: list[Transmission] = []
        self.calls: list[CallRecord] = []
        self.commands: list[str] = []  # every command line received, for debugging drivers

        self.settings = _Settings()
        self.call_state = CallState.IDLE
        self.slow = 0.0
        self.unplugged = False
        self._call: _Call | None = None
        self._mr = 0
        self._concat_ref = self._random.randrange(256)
        self._pending: list[tuple[str, bytes, int]] = []  # (kind, pdu, tpdu_len) the network still holds
        self._urc_buffer: list[str] = []  # TA buffer for CNMI mode 0 / mode 2 while busy
        self._last_line = ""

        # I/O
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pty: PtyPort | None = None
        self.port: str | None = None  # /dev/pts/N
        self._rx = bytearray()
        self._line = bytearray()
        self._pdu_length: int | None = None  # set while reading a PDU after "> "
        self._pdu_command = ""
        self._busy = False  # a command line is executing
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False

    @property
    def storage(self) -> dict[int, StoredMessage]:
        """The SIM's message slots (index → message)."""
        return self.sim.storage

    # ------------------------------------------------------------------
    # lifecycle

    async def open(self) -> None:
        """Create the pty (and link) on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._plug()
        self._boot_urcs()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()
        self._unplug_pty()

    async def __aenter__(self) -> VirtualModem:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> VirtualModem:
        """Run the modem on its own loop in a background thread."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.open())
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                loop.close()
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="virtual-modem", daemon=True)
        self._thread.start()
        ready.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> VirtualModem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------
    # public control API (any thread)

    def incoming_sms(self, sender: str, text: str) -> int:
        """The network delivers ``text`` from ``sender``; returns the number of parts."""
        return self._in_loop(self._incoming_sms, sender, text)

    def call(self, sender: str, *, missed: bool = False, duration: float | None = None) -> None:
        """An incoming call: the caller gives up after ``missed_rings`` rings if
        ``missed``, else waits up to ``max_rings`` for ATA and then talks for
        ``duration`` seconds (until ATH if None)."""
        self._in_loop(self._incoming_call, sender, missed, duration)

    def fault_garbage(self, size: int = 64) -> None:
        """Write ``size`` noise bytes (NULs, 8-bit junk) between lines."""
        self._in_loop(self._garbage, size)

    def fault_reboot(self) -> None:
        """Lose all volatile state (settings, call, command in progress) and
        print the boot URCs, as a modem that browned out."""
        self._in_loop(self._reboot)

    def fault_slow(self, seconds: float) -> None:
        """Add ``seconds`` before every reply block until set back to 0."""
        self._in_loop(setattr, self, "slow", max(0.0, float(seconds)))

    def fault_unplug(self, seconds: float) -> None:
        """Pull the USB cable: the pty and link vanish; after ``seconds`` a new
        pty (another /dev/pts/N) and the link come back and the modem boots."""
        self._in_loop(self._unplug, float(seconds))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of the state (for the control socket and tests)."""
        return self._in_loop(self._snapshot)

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one control request (the JSON-lines socket's, see docs/modem.md)::

            {"cmd": "incoming_sms", "from": "+33612345678", "text": "hi"}
            {"cmd": "call", "from": "+33612345678", "missed": true}
            {"cmd": "call", "from": "+33612345678", "duration": 5}
            {"cmd": "fault", "garbage": true}          (or a byte count)
            {"cmd": "fault", "reboot": true}
            {"cmd": "fault", "slow": 2.5}              (0 to stop)
            {"cmd": "fault", "unplug": 3}
            {"cmd": "state"}

        Answers ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
        """
        try:
            return {"ok": True, **self._control(request)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise TypeError("a request is a JSON object")
        cmd = request.get("cmd")
        if cmd == "incoming_sms":
            sender, text = request["from"], request["text"]
            if not isinstance(sender, str) or not isinstance(text, str):
                raise TypeError("from and text must be strings")
            return {"parts": self.incoming_sms(sender, text)}
        if cmd == "call":
            duration = request.get("duration")
            missed = bool(request.get("missed", duration is None))
            if duration is not None:
                duration = float(duration)
            self.call(str(request["from"]), missed=missed, duration=duration)
            return {}
        if cmd == "fault":
            kinds = [k for k in ("garbage", "reboot", "slow", "unplug") if k in request]
            if len(kinds) != 1:
                raise ValueError("fault takes exactly one of garbage, reboot, slow, unplug")
            kind, value = kinds[0], request[kinds[0]]
            if kind == "garbage":
                self.fault_garbage(64 if value is True else int(value))
            elif kind == "reboot":
                self.fault_reboot()
            elif kind == "slow":
                self.fault_slow(float(value))
            else:
                self.fault_unplug(float(value))
            return {}
        if cmd == "state":
            return {"state": self.snapshot()}
        raise ValueError(f"unknown cmd {cmd!r}")

    async def serve_control(self, path: str | os.PathLike[str]) -> asyncio.AbstractServer:
        """Listen for JSON-lines control requests on a unix socket at ``path``."""

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    try:
                        request = json.loads(line)
                    except ValueError as exc:
                        answer: dict[str, Any] = {"ok": False, "error": f"bad JSON: {exc}"}
                    else:
                        answer = self.control(request)
                    writer.write(json.dumps(answer).encode() + b"\n")
                    await writer.drain()
            except (ConnectionError, ValueError):  # ValueError: a line over the reader limit
                pass
            finally:
                writer.close()

        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return await asyncio.start_unix_server(session, path=os.fspath(path), limit=64 * 1024)

    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = self._loop
        if loop is None or self._closed:
            raise RuntimeError("the virtual modem is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn(*args)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout=10)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "link": str(self.link) if self.link else None,
            "unplugged": self.unplugged,
            "pin_state": self.sim.state,
            "call_state": self.call_state.value,
            "settings": asdict(self.settings),
            "storage": {i: {"stat": m.stat, "pdu": m.pdu.hex().upper()} for i, m in sorted(self.storage.items())},
            "pending": len(self._pending),
            "transmissions": [asdict(t) for t in self.transmissions],
            "calls": [asdict(c) for c in self.calls],
        }

    # ------------------------------------------------------------------
    # pty

    def _plug(self) -> None:
        assert self._loop is not None
        self._pty = PtyPort(self._loop, link=self.link, on_data=self._on_data)
        self.port = self._pty.open()
        self.unplugged = False
        log.info("virtual modem on %s%s", self.port, f" (link {self.link})" if self.link else "")

    def _unplug_pty(self) -> None:
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        self.unplugged = True

    def _on_data(self, data: bytes) -> None:
        self._rx += data
        self._pump()

    def _write(self, data: bytes) -> None:
        if self._pty is not None:  # unplugged: the bytes go nowhere
            self._pty.write(data)

    # ------------------------------------------------------------------
    # timers and tasks

    def _later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        assert self._loop is not None

        def fire() -> None:
            self._timers.discard(handle)
            fn(*args)

        handle = self._loop.call_later(max(0.0, delay), fire)
        self._timers.add(handle)
        return handle

    def _cancel_timer(self, handle: asyncio.TimerHandle | None) -> None:
        if handle is not None:
            handle.cancel()
            self._timers.discard(handle)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------
    # input: command lines and PDUs

    def _pump(self) -> None:
        """Consume received bytes while no command is executing."""
        while self._rx and not self._busy:
            byte = self._rx[0]
            del self._rx[0]
            if self.settings.echo:
                self._write(bytes([byte]))
            if self._pdu_length is not None:
                self._pdu_byte(byte)
            else:
                self._command_byte(byte)

    def _command_byte(self, byte: int) -> None:
        if byte == 0x0D:
            line = self._line.decode("ascii", "replace").strip()
            self._line.clear()
            if line:
                self._start_line(line)
        elif byte == 0x0A:
            pass
        elif byte in (0x08, 0x7F):
            if self._line:
                del self._line[-1]
        elif len(self._line) >= MAX_COMMAND_LINE:
            self._line.clear()
            self._final_error(_ERROR)
        elif byte == ord("/") and self._line.upper() == b"A":
            self._line.clear()  # A/ repeats the last command line at once
            if self._last_line:
                self._start_line(self._last_line)
        elif 0x20 <= byte < 0x7F:
            self._line.append(byte)

    def _pdu_byte(self, byte: int) -> None:
        if byte == CTRL_Z:
            hex_text = self._line.decode("ascii", "replace").strip()
            length = self._pdu_length
            self._line.clear()
            self._pdu_length = None
            assert length is not None
            self._run(lambda: self._pdu_received(length, hex_text))
        elif byte == ESC:
            self._line.clear()
            self._pdu_length = None
            self._run(lambda: _Reply())  # message entry cancelled
        elif byte in b"\r\n ":
            pass
        elif len(self._line) >= MAX_PDU_HEX:
            self._line.clear()
            self._pdu_length = None
            self._run(lambda: self._raise(_cms(304)))
        else:
            self._line.append(byte)

    @staticmethod
    def _raise(error: _CommandError) -> _Reply:
        raise error

    def _start_line(self, line: str) -> None:
        self.commands.append(line)
        log.debug("<- %s", line)
        if line[:2].upper() != "AT":
            return  # not for us: a modem ignores what does not start with AT
        self._last_line = line
        self._run(lambda: self._execute(line[2:]))

    def _run(self, handler: Callable[[], _Reply]) -> None:
        """Execute a command (or PDU) with the configured latency."""
        self._busy = True
        self._spawn(self._respond(handler))

    async def _respond(self, handler: Callable[[], _Reply]) -> None:
        try:
            try:
                reply = handler()
            except _CommandError as error:
                await self._delay()
                self._final_error(error)
                return
            except Exception:  # a bug in a handler must not kill the modem
                log.exception("command handler failed")
                await self._delay()
                self._final_error(_cme(100))
                return
            await self._delay()
            if reply.lines:
                self._write(b"\r\n" + "\r\n".join(reply.lines).encode("ascii", "replace") + b"\r\n")
                if self._delay_seconds():
                    await self._delay()
            if reply.prompt:
                self._write(b"\r\n> ")
                return  # still "busy" for URC buffering: the PDU is being typed
            self._write(f"\r\n{reply.final}\r\n".encode())
            if reply.after is not None:
                reply.after()
        finally:
            self._busy = False
            if self._pdu_length is None:
                self._flush_urcs()
            if not self._closed:
                self._pump()

    def _delay_seconds(self) -> float:
        return self.latency + self.slow

    async def _delay(self) -> None:
        seconds = self._delay_seconds()
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _final_error(self, error: _CommandError) -> None:
        if error.kind == "ERROR" or self.settings.cmee == 0:
            text = "ERROR"
        elif self.settings.cmee == 1:
            text = f"+{error.kind} ERROR: {error.code}"
        else:
            table = _CME_TEXT if error.kind == "CME" else _CMS_TEXT
            text = f"+{error.kind} ERROR: {table.get(error.code, error.code)}"
        self._write(f"\r\n{text}\r\n".encode())

    # ------------------------------------------------------------------
    # URCs

    def _urc(self, *lines: str, sms: bool = False) -> None:
        """Send an unsolicited result code (one or two lines).

        SMS indications follow AT+CNMI's <mode>: 0 buffers them in the TA
        until a mode 1-3 is set, 2 holds them while a command runs and sends
        them after its final result, 1 and 3 send them at once (even in the
        middle of a reply). RING/+CLIP/+CREG... are always sent at once.
        """
        text = "\r\n" + "\r\n".join(lines) + "\r\n"
        mode = self.settings.cnmi[0]
        busy = self._busy or self._pdu_length is not None
        if sms and (mode == 0 or mode == 2 and busy):
            self._urc_buffer.append(text)
            return
        self._write(text.encode("ascii", "replace"))

    def _flush_urcs(self) -> None:
        if self._urc_buffer and self.settings.cnmi[0] != 0:
            buffered, self._urc_buffer = self._urc_buffer, []
            for text in buffered:
                self._write(text.encode("ascii", "replace"))

    def _boot_urcs(self) -> None:
        self._write(b"\r\nRDY\r\n")
        self._write(f"\r\n+CPIN: {self.sim.state}\r\n".encode())
        if self._sim_ready():
            self._write(b"\r\nSMS Ready\r\n")
            self._flush_pending()

    # ------------------------------------------------------------------
    # faults

    def _garbage(self, size: int) -> None:
        noise = bytes(self._random.choice(b"\x00\xff\xfe\x80\x9b\x1b\x07\xc3\xa9") for _ in range(size))
        self._write(noise)

    def _reset_volatile(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._busy = False
        self._rx.clear()
        self._line.clear()
        self._pdu_length = None
        self._urc_buffer.clear()
        self.settings = _Settings()
        self.slow = 0.0
        if self._call is not None:
            self._end_call(answered=self._call.answered_at is not None)
        self.sim.power_cycle()

    def _reboot(self) -> None:
        log.info("fault: reboot")
        self._reset_volatile()
        self._later(self.boot_delay, self._boot_urcs)

    def _unplug(self, seconds: float) -> None:
        log.info("fault: unplug for %.1fs", seconds)
        self._reset_volatile()
        self._unplug_pty()
        self._later(seconds, self._replug)

    def _replug(self) -> None:
        if self._closed:
            return
        self._plug()
        self._later(self.boot_delay, self._boot_urcs)

    # ------------------------------------------------------------------
    # network side: SMS

    def _sim_ready(self) -> bool:
        return self.sim.state == "READY"

    def _registered(self) -> bool:
        return self._sim_ready() and self.settings.fun == 1 and not self.unplugged

    def _next_mr(self) -> int:
        self._mr = (self._mr + 1) % 256
        return self._mr

    def _incoming_sms(self, sender: str, text: str) -> int:
        encoding = gsm7.pick_encoding(text)
        chunks = gsm7.split_text(text, encoding)
        self._concat_ref = (self._concat_ref + 1) % 256
        total = len(chunks)
        for seq, chunk in enumerate(chunks, 1):
            data = pdu.encode_deliver(
                sender,
                chunk,
                timestamp=_now_scts(),
                smsc=self.smsc,
                concat=(self._concat_ref, total, seq) if total > 1 else None,
                encoding=encoding,
            )
            self._network_deliver("deliver", data)
        return total

    def _network_deliver(self, kind: str, data: bytes) -> None:
        tpdu_length = len(data) - 1 - data[0]
        if not self._registered():
            self._pending.append((kind, data, tpdu_length))  # the network keeps it and retries
            return
        mt, ds = self.settings.cnmi[1], self.settings.cnmi[3]
        if kind == "deliver":
            if mt in (2, 3):
                self._urc(f"+CMT: ,{tpdu_length}", data.hex().upper(), sms=True)
                return
            index = self.sim.store(0, data, tpdu_length)
            if index is None:
                self._pending.append((kind, data, tpdu_length))
                return
            if mt == 1:
                self._urc(f'+CMTI: "SM",{index}', sms=True)
        else:  # status report
            if ds == 1:
                self._urc(f"+CDS: {tpdu_length}", data.hex().upper(), sms=True)
            elif ds == 2:
                index = self.sim.store(0, data, tpdu_length)
                if index is None:
                    self._pending.append((kind, data, tpdu_length))
                    return
                self._urc(f'+CDSI: "SM",{index}', sms=True)
            # ds == 0: status reports are not routed to the TE (TS 27.005): dropped

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for kind, data, _ in pending:
            self._network_deliver(kind, data)

    def _transmit(self, submit: pdu.Submit) -> int:
        mr = self._next_mr()
        concat = (
            {"ref": submit.concat.ref, "total": submit.concat.total, "seq": submit.concat.seq}
            if submit.concat
            else None
        )
        record = Transmission(
            to=submit.recipient,
            text=submit.text,
            at=_now_iso(),
            reference=mr,
            report_requested=submit.request_report,
            concat=concat,
        )
        self.transmissions.append(record)
        self._log_radio(asdict(record))
        if submit.request_report:
            scts = _now_scts()
            self._later(self.report_delay, self._status_report, mr, submit.recipient, scts)
        return mr

    def _status_report(self, reference: int, recipient: str, scts: datetime) -> None:
        data = pdu.encode_status_report(
            reference=reference,
            recipient=recipient,
            scts=scts,
            discharge=_now_scts(),
            status_code=0,
            smsc=self.smsc,
        )
        self._network_deliver("report", data)

    def _log_radio(self, record: dict[str, Any]) -> None:
        if self.radio_log is None:
            return
        with self.radio_log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------
    # network side: calls

    def _call_event(self, trigger: str) -> None:
        self.call_state = CALL_TRANSITIONS[self.call_state][trigger]

    def _incoming_call(self, sender: str, missed: bool, duration: float | None) -> None:
        if "incoming" not in CALL_TRANSITIONS[self.call_state] or not self._registered():
            # busy or unreachable: the caller gets voicemail; log it as missed
            self.calls.append(CallRecord("in", sender, _now_iso(), False, 0.0))
            self._log_radio(asdict(self.calls[-1]))
            return
        self._call_event("incoming")
        self._call = _Call("in", sender, time.monotonic(), duration=duration, missed=missed)
        self._ring()

    def _ring(self) -> None:
        call = self._call
        if call is None or self.call_state is not CallState.RINGING:
            return
        limit = self.missed_rings if call.missed else self.max_rings
        if call.rings >= limit:
            self._remote_hangup()
            return
        call.rings += 1
        lines = ["+CRING: VOICE" if self.settings.crc else "RING"]
        if self.settings.clip:
            lines.append(f'+CLIP: "{call.number}",{_toa(call.number)},"",0,"",0')
        for line in lines:
            self._urc(line)
        call.timer = self._later(self.ring_interval, self._ring)

    def _remote_hangup(self) -> None:
        if self._call is None:
            return
        self._call_event("remote-hangup")
        # Recorded (and in the radio log) before anyone can see the NO CARRIER.
        self._end_call(answered=self._call.answered_at is not None)
        self._urc("NO CARRIER")

    def _remote_answer(self) -> None:
        if self._call is not None and self.call_state is CallState.DIALLING:
            self._call_event("remote-answer")
            self._call.answered_at = time.monotonic()

    def _end_call(self, *, answered: bool) -> None:
        call, self._call = self._call, None
        self.call_state = CallState.IDLE
        if call is None:
            return
        self._cancel_timer(call.timer)
        duration = time.monotonic() - call.answered_at if call.answered_at else 0.0
        record = CallRecord(call.direction, call.number, _now_iso(), answered, round(duration, 3))
        self.calls.append(record)
        self._log_radio(asdict(record))

    # ------------------------------------------------------------------
    # command execution

    def _execute(self, body: str) -> _Reply:
        try:
            parts = split_command_line(body)
        except ValueError:
            raise _ERROR from None
        reply = _Reply()
        for name, rest in parts:
            handler = _HANDLERS.get(name)
            if handler is None:
                raise _ERROR
            result = handler(self, rest)
            if result is None:
                continue
            reply.lines.extend(result.lines)
            if result.after is not None:
                reply.after = result.after
            if result.prompt or result.final != "OK":
                reply.prompt, reply.final = result.prompt, result.final
                break
        return reply

    def _text(self, value: str) -> str:
        """A string parameter in the TE character set (AT+CSCS)."""
        if self.settings.cscs == "UCS2":
            return value.encode("utf-16-be").hex().upper()
        return value

    def _from_text(self, value: str) -> str:
        if self.settings.cscs == "UCS2":
            try:
                return bytes.fromhex(value).decode("utf-16-be")
            except ValueError:
                raise _ERROR from None
        return value

    def _need_sim(self, *, sms: bool = False) -> None:
        if self.sim.state == "READY":
            return
        if sms:
            raise _cms(316 if self.sim.state == "SIM PUK" else 311)
        raise _cme(12 if self.sim.state == "SIM PUK" else 11)

    # -- V.250 basics ----------------------------------------------------------

    def _at_e(self, rest: str) -> None:
        if rest not in ("", "0", "1"):
            raise _ERROR
        self.settings.echo = rest == "1"

    def _at_v(self, rest: str) -> None:
        if rest not in ("", "1"):
            raise _ERROR  # numeric result codes are not simulated

    def _at_z(self, rest: str) -> None:
        self.settings = _Settings()

    def _at_i(self, rest: str) -> _Reply:
        return _Reply([self.manufacturer, self.model, f"Revision: {self.revision}"])

    def _at_s(self, rest: str) -> _Reply | None:
        return _Reply(["000"]) if rest.endswith("?") else None

    def _at_d(self, rest: str) -> _Reply:
        self._need_sim()
        number = rest.strip()
        if not number.endswith(";"):
            return _Reply(final="NO CARRIER")  # data calls are not simulated
        number = number[:-1].strip().strip('"')
        if not number or "dial" not in CALL_TRANSITIONS[self.call_state]:
            raise _cme(3)
        self._call_event("dial")
        self._call = _Call("out", number, time.monotonic())
        self._call.timer = self._later(self.answer_delay, self._remote_answer)
        return _Reply()

    def _at_a(self, rest: str) -> _Reply:
        if self.call_state is not CallState.RINGING or self._call is None:
            return _Reply(final="NO CARRIER")
        self._call_event("answer")
        call = self._call
        self._cancel_timer(call.timer)
        call.answered_at = time.monotonic()
        if call.duration is not None:
            call.timer = self._later(call.duration, self._remote_hangup)
        return _Reply()

    def _at_h(self, rest: str) -> None:
        if self._call is not None:
            self._call_event("hangup")
            self._end_call(answered=self._call.answered_at is not None)

    # -- identification ------------------------------------------------------------

    def _info(value_attr: str, *, sim: bool = False) -> Callable[[VirtualModem, str], _Reply | None]:  # type: ignore[misc]
        def handler(self: VirtualModem, rest: str) -> _Reply | None:
            if rest == "=?":
                return None
            if rest:
                raise _ERROR
            if sim:
                self._need_sim()
            return _Reply([str(getattr(self, value_attr))])

        return handler

    _at_cgmi = _info("manufacturer")
    _at_cgmm = _info("model")
    _at_cgmr = _info("revision")
    _at_cgsn = _info("imei")
    _at_cimi = _info("imsi", sim=True)

    def _at_ccid(self, rest: str) -> _Reply | None:
        if rest == "=?":
            return None
        return _Reply([f"+CCID: {self.iccid}"])

    def _at_gcap(self, rest: str) -> _Reply:
        return _Reply(["+GCAP: +CGSM"])

    def _at_cmee(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CMEE: {self.settings.cmee}"])
        if rest == "=?":
            return _Reply(["+CMEE: (0-2)"])
        (value,) = _int_args(rest[1:], count=1) if rest.startswith("=") else [0]
        if value not in (0, 1, 2):
            raise _ERROR
        self.settings.cmee = value
        return None

    # -- SIM -----------------------------------------------------------------------

    def _at_cpin(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CPIN: {self.sim.state}"])
        if rest == "=?":
            return None
        if not rest.startswith("="):
            raise _ERROR
        self.sim.enter(_split_args(rest[1:]))
        return _Reply(after=self._sim_unlocked)

    def _sim_unlocked(self) -> None:
        self._urc("SMS Ready")
        self._registration_changed()
        self._flush_pending()

    def _at_cpinr(self, rest: str) -> _Reply:
        # SIMCom/Quectel style retry counters: +CPINR: <code>,<retries>,<default>
        return _Reply([f"+CPINR: SIM PIN,{self.sim.tries},3", "+CPINR: SIM PUK,10,10"])

    def _at_cfun(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CFUN: {self.settings.fun}"])
        if rest == "=?":
            return _Reply(["+CFUN: (0,1,4),(0-1)"])
        args = _int_args(rest[1:], count=2)
        if args[0] not in (0, 1, 4):
            raise _cme(4)
        if len(args) == 2 and args[1] == 1:
            return _Reply(after=self._reboot)
        self.settings.fun = args[0]
        self._registration_changed()
        if args[0] == 1:
            self._flush_pending()
        return None

    # -- network -----------------------------------------------------------------------

    def _at_csq(self, rest: str) -> _Reply:
        if rest == "=?":
            return _Reply(["+CSQ: (0-31,99),(0-7,99)"])
        return _Reply([f"+CSQ: {self.rssi if self._registered() else 99},99"])

    def _reg_status(self) -> int:
        return 1 if self._registered() else 0

    def _registration_changed(self) -> None:
        stat = self._reg_status()
        for name, n in (("+CREG", self.settings.creg), ("+CGREG", self.settings.cgreg), ("+CEREG", self.settings.cereg)):
            if n:
                self._urc(f"{name}: {stat}")

    def _reg(name: str, attr: str) -> Callable[[VirtualModem, str], _Reply | None]:  # type: ignore[misc]
        def handler(self: VirtualModem, rest: str) -> _Reply | None:
            if rest == "?":
                n = getattr(self.settings, attr)
                extra = ',"1A2B","01C2D3E4",7' if n == 2 and self._registered() else ""
                return _Reply([f"{name}: {n},{self._reg_status()}{extra}"])
            if rest == "=?":
                return _Reply([f"{name}: (0-2)"])
            args = _int_args(rest[1:], count=1) if rest.startswith("=") else [0]
            if args[0] not in (0, 1, 2):
                raise _cme(4)
            setattr(self.settings, attr, args[0])
            return None

        return handler

    _at_creg = _reg("+CREG", "creg")
    _at_cgreg = _reg("+CGREG", "cgreg")
    _at_cereg = _reg("+CEREG", "cereg")

    def _at_cops(self, rest: str) -> _Reply | None:
        if rest == "?":
            if not self._registered():
                return _Reply(["+COPS: 0"])
            fmt = self.settings.cops_format
            name = self.operator_code if fmt == 2 else self._text(self.operator)
            return _Reply([f'+COPS: 0,{fmt},"{name}",7'])
        if rest == "=?":
            op = self._text(self.operator)
            return _Reply([f'+COPS: (2,"{op}","{op}","{self.operator_code}",7),,(0-4),(0-2)'])
        args = _split_args(rest[1:])
        if args and args[0] == "3" and len(args) >= 2:
            if args[1] not in ("0", "1", "2"):
                raise _cme(4)
            self.settings.cops_format = int(args[1])
        return None

    def _at_cnum(self, rest: str) -> _Reply | None:
        if rest == "=?":
            return None
        self._need_sim()
        return _Reply([f'+CNUM: "","{self._text(self.number)}",{_toa(self.number)}'])

    def _at_cscs(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f'+CSCS: "{self.settings.cscs}"'])
        if rest == "=?":
            return _Reply(['+CSCS: ("GSM","IRA","UCS2")'])
        value = rest[1:].strip().strip('"').upper()
        if value not in ("GSM", "IRA", "UCS2"):
            raise _cme(4)
        self.settings.cscs = value
        return None

    def _at_clip(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CLIP: {self.settings.clip},1"])
        if rest == "=?":
            return _Reply(["+CLIP: (0,1)"])
        self.settings.clip = _int_args(rest[1:], count=1)[0] if rest.startswith("=") else 0
        return None

    def _at_crc(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CRC: {self.settings.crc}"])
        if rest.startswith("=") and rest != "=?":
            self.settings.crc = _int_args(rest[1:], count=1)[0]
        return None

    def _at_clcc(self, rest: str) -> _Reply | None:
        call = self._call
        if rest == "=?" or call is None:
            return None
        stat = {CallState.ACTIVE: 0, CallState.DIALLING: 2, CallState.RINGING: 4}[self.call_state]
        direction = 0 if call.direction == "out" else 1
        return _Reply([f'+CLCC: 1,{direction},{stat},0,0,"{call.number}",{_toa(call.number)}'])

    def _at_cusd(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply(["+CUSD: 0"])
        if rest == "=?":
            return _Reply(["+CUSD: (0-2)"])
        args = _split_args(rest[1:])
        if len(args) >= 2 and args[1]:
            self._need_sim()
            answer = self._text("Solde: 10,00 EUR")
            return _Reply(after=lambda: self._later(0.05, self._urc, f'+CUSD: 0,"{answer}",15'))
        return None

    def _at_cclk(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([datetime.now(UTC).strftime('+CCLK: "%y/%m/%d,%H:%M:%S+00"')])
        return None

    def _at_cbc(self, rest: str) -> _Reply:
        return _Reply(["+CBC: 0,100,4200"])

    # -- SMS ---------------------------------------------------------------------------

    def _at_cmgf(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CMGF: {self.settings.cmgf}"])
        if rest == "=?":
            return _Reply(["+CMGF: (0)"])
        value = _int_args(rest[1:], count=1)[0] if rest.startswith("=") else 0
        if value != 0:
            raise _cms(303)  # text mode is not simulated: drivers fall back to PDU
        self.settings.cmgf = value
        return None

    def _at_csms(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f"+CSMS: {self.settings.csms},1,1,1"])
        if rest == "=?":
            return _Reply(["+CSMS: (0,1)"])
        value = _int_args(rest[1:], count=1)[0]
        if value not in (0, 1):
            raise _cms(303)
        self.settings.csms = value
        return _Reply(["+CSMS: 1,1,1"])

    def _at_cnmi(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply(["+CNMI: " + ",".join(map(str, self.settings.cnmi))])
        if rest == "=?":
            return _Reply(["+CNMI: (0-3),(0-3),(0),(0-2),(0,1)"])
        values = _int_args(rest[1:], count=5) if rest.startswith("=") else []
        values += [0] * (5 - len(values))
        mode, mt, bm, ds, bfr = values
        if mode > 3 or mt > 3 or bm != 0 or ds > 2 or bfr > 1:
            raise _cms(303)
        self.settings.cnmi = (mode, mt, bm, ds, bfr)
        if bfr == 1:
            self._urc_buffer.clear()
        return None  # buffered indications go out after OK (see _respond)

    def _at_cnma(self, rest: str) -> None:
        return None

    def _storage_counts(self) -> str:
        return f"{len(self.storage)},{self.sim.capacity}"

    def _at_cpms(self, rest: str) -> _Reply | None:
        if rest == "?":
            self._need_sim(sms=True)
            c = self._storage_counts()
            return _Reply([f'+CPMS: "SM",{c},"SM",{c},"SM",{c}'])
        if rest == "=?":
            return _Reply(['+CPMS: ("SM"),("SM"),("SM")'])
        self._need_sim(sms=True)
        memories = [m.upper() for m in _split_args(rest[1:])]
        if not 1 <= len(memories) <= 3 or any(m != "SM" for m in memories):
            raise _cms(302)
        c = self._storage_counts()
        return _Reply(["+CPMS: " + ",".join([c] * len(memories))])

    def _message_lines(self, head: str, index: int | None, message: StoredMessage) -> list[str]:
        prefix = f"{head}: {index}," if index is not None else f"{head}: "
        return [f"{prefix}{message.stat},,{message.tpdu_length}", message.pdu.hex().upper()]

    def _at_cmgl(self, rest: str) -> _Reply | None:
        if rest == "=?":
            return _Reply(["+CMGL: (0-4)"])
        self._need_sim(sms=True)
        arg = rest[1:].strip() if rest.startswith("=") else "0"
        if not arg.isdigit() or int(arg) > 4:
            raise _cms(304 if self.settings.cmgf == 0 else 305)
        stat = int(arg)
        lines: list[str] = []
        for index, message in sorted(self.storage.items()):
            if stat == 4 or message.stat == stat:
                lines += self._message_lines("+CMGL", index, message)
                if message.stat == 0:
                    message.stat = 1
        return _Reply(lines)

    def _at_cmgr(self, rest: str) -> _Reply | None:
        if rest == "=?":
            return None
        self._need_sim(sms=True)
        args = _int_args(rest[1:], count=1) if rest.startswith("=") else []
        if not args:
            raise _cms(304)
        message = self.storage.get(args[0])
        if message is None:
            raise _cms(321)
        lines = self._message_lines("+CMGR", None, message)
        if message.stat == 0:
            message.stat = 1
        return _Reply(lines)

    def _at_cmgd(self, rest: str) -> _Reply | None:
        if rest == "=?":
            return _Reply([f"+CMGD: (1-{self.sim.capacity}),(0-4)"])
        self._need_sim(sms=True)
        args = _int_args(rest[1:], count=2) if rest.startswith("=") else []
        if not args:
            raise _cms(304)
        index, flag = args[0], args[1] if len(args) > 1 else 0
        if flag == 0:
            if not 1 <= index <= self.sim.capacity:
                raise _cms(321)
            self.storage.pop(index, None)
        else:
            doomed = {1: {1}, 2: {1, 3}, 3: {1, 2, 3}, 4: {0, 1, 2, 3}}.get(flag)
            if doomed is None:
                raise _cms(304)
            for i in [i for i, m in self.storage.items() if m.stat in doomed]:
                del self.storage[i]
        return _Reply(after=self._flush_pending)

    def _prompting(self, rest: str, command: str) -> _Reply:
        if rest == "=?":
            return _Reply()
        self._need_sim(sms=True)
        if self.settings.cmgf != 0:
            raise _cms(305)
        args = _int_args(rest[1:], count=2) if rest.startswith("=") else []
        if not args or not 7 <= args[0] <= 176:
            raise _cms(304)
        self._pdu_length = args[0]
        self._pdu_command = command if len(args) == 1 else f"{command}:{args[1]}"
        return _Reply(prompt=True)

    def _at_cmgs(self, rest: str) -> _Reply:
        return self._prompting(rest, "+CMGS")

    def _at_cmgw(self, rest: str) -> _Reply:
        return self._prompting(rest, "+CMGW")

    def _pdu_received(self, length: int, hex_text: str) -> _Reply:
        try:
            message = pdu.decode(hex_text, incoming=False, tpdu_length=length)
        except (ValueError, pdu.PduError):
            raise _cms(304) from None
        assert isinstance(message, pdu.Submit)
        command, _, stat = self._pdu_command.partition(":")
        if command == "+CMGW":
            data = bytes.fromhex(hex_text)
            index = self.sim.store(int(stat) if stat else 2, data, length)
            if index is None:
                raise _cms(322)
            return _Reply([f"+CMGW: {index}"])
        if not self._registered():
            raise _cms(331)
        return _Reply([f"+CMGS: {self._transmit(message)}"])

    def _at_cmss(self, rest: str) -> _Reply:
        self._need_sim(sms=True)
        args = _int_args(rest[1:], count=1) if rest.startswith("=") else []
        stored = self.storage.get(args[0]) if args else None
        if stored is None:
            raise _cms(321)
        try:
            message = pdu.decode(stored.pdu, incoming=True)
        except pdu.PduError:
            raise _cms(304) from None
        if not isinstance(message, pdu.Submit):
            raise _cms(302)
        if not self._registered():
            raise _cms(331)
        stored.stat = 3
        return _Reply([f"+CMSS: {self._transmit(message)}"])

    def _at_csca(self, rest: str) -> _Reply | None:
        if rest == "?":
            return _Reply([f'+CSCA: "{self._text(self.smsc)}",{_toa(self.smsc)}'])
        if rest == "=?":
            return None
        args = _split_args(rest[1:])
        if not args or not args[0]:
            raise _cms(304)
        self.smsc = self._from_text(args[0])
        return None

    def _at_csmp(self, rest: str) -> _Reply | None:
        return _Reply(["+CSMP: 17,167,0,0"]) if rest == "?" else None

    def _at_csdh(self, rest: str) -> _Reply | None:
        return _Reply(["+CSDH: 0"]) if rest == "?" else None

    del _info, _reg


def _ok(self: VirtualModem, rest: str) -> None:
    return None


_HANDLERS: Final[dict[str, Callable[[VirtualModem, str], _Reply | None]]] = {
    "E": VirtualModem._at_e,
    "V": VirtualModem._at_v,
    "Q": _ok,
    "X": _ok,
    "Z": VirtualModem._at_z,
    "I": VirtualModem._at_i,
    "S": VirtualModem._at_s,
    "D": VirtualModem._at_d,
    "A": VirtualModem._at_a,
    "H": VirtualModem._at_h,
    "&F": VirtualModem._at_z,
    "&C": _ok,
    "&D": _ok,
    "&K": _ok,
    "&W": _ok,
    "+CMEE": VirtualModem._at_cmee,
    "+CGMI": VirtualModem._at_cgmi,
    "+GMI": VirtualModem._at_cgmi,
    "+CGMM": VirtualModem._at_cgmm,
    "+GMM": VirtualModem._at_cgmm,
    "+CGMR": VirtualModem._at_cgmr,
    "+GMR": VirtualModem._at_cgmr,
    "+CGSN": VirtualModem._at_cgsn,
    "+GSN": VirtualModem._at_cgsn,
    "+CIMI": VirtualModem._at_cimi,
    "+CCID": VirtualModem._at_ccid,
    "+ICCID": VirtualModem._at_ccid,
    "+QCCID": VirtualModem._at_ccid,
    "+GCAP": VirtualModem._at_gcap,
    "+CPIN": VirtualModem._at_cpin,
    "+CPINR": VirtualModem._at_cpinr,
    "+CFUN": VirtualModem._at_cfun,
    "+CSQ": VirtualModem._at_csq,
    "+CREG": VirtualModem._at_creg,
    "+CGREG": VirtualModem._at_cgreg,
    "+CEREG": VirtualModem._at_cereg,
    "+COPS": VirtualModem._at_cops,
    "+CNUM": VirtualModem._at_cnum,
    "+CSCS": VirtualModem._at_cscs,
    "+CLIP": VirtualModem._at_clip,
    "+CRC": VirtualModem._at_crc,
    "+COLP": _ok,
    "+CVHU": _ok,
    "+CHUP": VirtualModem._at_h,
    "+CLCC": VirtualModem._at_clcc,
    "+CUSD": VirtualModem._at_cusd,
    "+CCLK": VirtualModem._at_cclk,
    "+CBC": VirtualModem._at_cbc,
    "+CMGF": VirtualModem._at_cmgf,
    "+CSMS": VirtualModem._at_csms,
    "+CNMI": VirtualModem._at_cnmi,
    "+CNMA": VirtualModem._at_cnma,
    "+CPMS": VirtualModem._at_cpms,
    "+CMGL": VirtualModem._at_cmgl,
    "+CMGR": VirtualModem._at_cmgr,
    "+CMGD": VirtualModem._at_cmgd,
    "+CMGS": VirtualModem._at_cmgs,
    "+CMGW": VirtualModem._at_cmgw,
    "+CMSS": VirtualModem._at_cmss,
    "+CSCA": VirtualModem._at_csca,
    "+CSMP": VirtualModem._at_csmp,
    "+CSDH": VirtualModem._at_csdh,
}
