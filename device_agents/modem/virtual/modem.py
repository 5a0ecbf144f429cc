"""The virtual modem: its parts assembled, its life cycle and its public control API.

I/O model: everything runs on one asyncio event loop. The pty master is
watched with ``loop.add_reader``; timers (status reports, rings, reply
latency, unplug) are ``call_later`` handles or small tasks. All state is
touched from that loop only. :meth:`VirtualModem.start` runs the loop in a
background thread for synchronous tests (pyserial is blocking), and the
public control methods (:meth:`incoming_sms`, :meth:`call`, :meth:`fault_*`)
may be called from any thread: they hop onto the loop and wait.
``sim_cli`` runs the same loop in the foreground with a JSON-lines control
socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .calls import CallCommands, CallState
from .commands import CommandInput, Handler
from .core import log
from .faults import FaultOptions, Faults, SplitWriter
from .info import Huawei, InfoCommands, Quectel
from .network import Network
from .profiles import PLAIN, Profile
from .pty import PtyPort, run_control, serve_control
from .records import CallRecord, StoredMessage, Transmission
from .state import Settings, SimCard, StateCommands
from .storage import MessageStore, StorageCommands


class VirtualModem(CommandInput, StateCommands, InfoCommands, StorageCommands, Network, CallCommands, Faults):
    """A GSM modem on a pty. See the package docstring and docs/modem.md."""

    def __init__(
        self,
        *,
        link: str | os.PathLike[str] | None = None,
        profile: Profile = PLAIN,
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
        network_retry: float = 1.0,
        faults: FaultOptions | None = None,
        seed: int | None = None,
    ) -> None:
        self.profile = profile
        self.fault_options = faults or FaultOptions()
        self.network_retry = network_retry
        self._splitter: SplitWriter | None = None
        self.manufacturer = profile.manufacturer
        self.model = profile.model
        self.revision = profile.revision
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

        # survive reboots and unplugs
        self.sim = SimCard(pin=pin, puk=puk)
        self.memory = MessageStore(memories=tuple(dict.fromkeys(profile.memories + profile.receive_memories)),
                                   capacity=capacity, base=profile.index_base)
        # observable history
        self.transmissions: list[Transmission] = []
        self.calls: list[CallRecord] = []
        self.commands: list[str] = []  # every command line received, for debugging drivers

        self.settings = Settings(cnmi=profile.cnmi_default)
        self._cpms = list(profile.cpms_default)
        self.urc_port = profile.urc_port_initial  # kept in NV: survives reboots
        self._ack_timer: asyncio.TimerHandle | None = None
        self.call_state = CallState.IDLE
        self.slow = 0.0
        self.unplugged = False
        self._call = None
        self._mr = 0
        self._concat_ref = self._random.randrange(256)
        self._pending: list[tuple[str, bytes, int]] = []  # (kind, pdu, tpdu_len) the network still holds
        self._urc_buffer: list[str] = []  # TA buffer for CNMI mode 0 / mode 2 while busy
        self._cnma_expected = None
        self._last_line = ""
        self._extra_handlers: dict[str, Handler] = {}
        if profile.name == "quectel-ec25":
            self._extra_handlers["+QURCCFG"] = Quectel._at_qurccfg
        if profile.name == "huawei-e173":
            self._extra_handlers["^CURC"] = Huawei._at_curc
            self._extra_handlers["^PORTSEL"] = Huawei._at_portsel
        self.noise_on = True  # until AT^CURC=0

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
        return self.memory.of("SM") if "SM" in self.memory.slots else self.memory.of(self.memory.memories[0])

    # ------------------------------------------------------------------
    # lifecycle

    async def open(self) -> None:
        """Create the pty (and link) on the running loop."""
        self._loop = asyncio.get_running_loop()
        if self.fault_options.split_lines:
            self._splitter = SplitWriter(self._loop, self._random.randint)
        self._plug()
        self._boot_urcs()
        if self.profile.noise_interval is not None:
            self._later(self.profile.noise_interval, self._noise)

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
        return int(self._in_loop(self._incoming_sms, sender, text))

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
        result: dict[str, Any] = self._in_loop(self._snapshot)
        return result

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
            return {"ok": True, **run_control(self, request)}
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    async def serve_control(self, path: str | os.PathLike[str]) -> asyncio.AbstractServer:
        """Listen for JSON-lines control requests on a unix socket at ``path``."""
        return await serve_control(self, path)

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
            "profile": self.profile.name,
            "urc_port": self.urc_port,
            "port": self.port,
            "link": str(self.link) if self.link else None,
            "unplugged": self.unplugged,
            "pin_state": self.sim.state,
            "call_state": self.call_state.value,
            "settings": asdict(self.settings),
            "storage": {i: {"stat": m.stat, "pdu": m.pdu.hex().upper()} for i, m in sorted(self.storage.items())},
            "memories": {
                mem: {i: {"stat": m.stat, "pdu": m.pdu.hex().upper()} for i, m in sorted(slots.items())}
                for mem, slots in self.memory.slots.items()
            },
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
