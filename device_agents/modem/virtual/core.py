"""What every part of the virtual modem shares: its attributes, the byte
output, timers, unsolicited result codes and the registration state.

The modem is one object assembled from per-concern parts (commands, state,
storage, calls, faults, network); each part is a class deriving from
:class:`ModemCore`, which declares the attributes they share and the few
methods one part calls on another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agents.common import iso_utc

from .errors import CommandError, Reply, cme, cms, plain_error
from .profiles import Profile

if TYPE_CHECKING:
    from .calls import ActiveCall, CallState
    from .faults import FaultOptions, SplitWriter
    from .pty import PtyPort
    from .records import CallRecord, Transmission
    from .state import Settings, SimCard
    from .storage import MessageStore

log = logging.getLogger("device_agents.modem.virtual_modem")


def now_iso() -> str:
    return iso_utc(time.time())


def now_scts() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def toa(number: str) -> int:
    return 145 if number.startswith("+") else 129


class ModemCore:
    """Shared attributes and helpers of the virtual modem's parts."""

    profile: Profile
    settings: Settings
    sim: SimCard
    memory: MessageStore
    number: str
    smsc: str
    operator: str
    operator_code: str
    imei: str
    imsi: str
    iccid: str
    rssi: int
    report_delay: float
    network_retry: float
    latency: float
    ring_interval: float
    missed_rings: int
    max_rings: int
    answer_delay: float
    boot_delay: float
    radio_log: Path | None
    transmissions: list[Transmission]
    calls: list[CallRecord]
    commands: list[str]
    call_state: CallState
    unplugged: bool
    _random: random.Random
    _call: ActiveCall | None
    _loop: asyncio.AbstractEventLoop | None
    _pty: PtyPort | None
    _busy: bool
    _pdu_length: int | None
    _pdu_command: str
    _urc_buffer: list[str]
    _pending: list[tuple[str, bytes, int]]
    _tasks: set[asyncio.Task[Any]]
    _timers: set[asyncio.TimerHandle]
    _closed: bool
    _cnma_expected: tuple[str, bytes] | None
    _ack_timer: asyncio.TimerHandle | None
    _cpms: list[str]
    urc_port: str | None
    fault_options: FaultOptions
    _splitter: SplitWriter | None

    # -- implemented by other parts ------------------------------------------------------

    def _flush_pending(self) -> None:
        raise NotImplementedError

    def _reboot(self) -> None:
        raise NotImplementedError

    def _cnma_received(self) -> None:
        raise NotImplementedError

    def _pdu_received(self, length: int, hex_text: str) -> Reply:
        raise NotImplementedError

    def _plug(self) -> None:
        raise NotImplementedError

    def _unplug_pty(self) -> None:
        raise NotImplementedError

    def _end_call(self, *, answered: bool) -> None:
        raise NotImplementedError

    # -- output ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._pty is None:  # unplugged: the bytes go nowhere
            return
        if self._splitter is not None:
            self._splitter.write(self._pty.write, data)
        else:
            self._pty.write(data)

    def _urc(self, *lines: str, sms: bool = False, ready: bool = False) -> None:
        """Send an unsolicited result code (one or two lines).

        SMS indications follow AT+CNMI's <mode> (TS 27.005 §3.4.1): 0 buffers
        them in the TA until a mode 1-3 is set, 2 holds them while a command
        runs and sends them after its final result, 1 and 3 send them at once
        (even in the middle of a reply). RING/+CLIP/+CREG... are always sent
        at once.
        """
        if self.urc_port not in (None, "usbat", "1") and not ready:
            return  # AT+QURCCFG="urcport" / AT^PORTSEL point elsewhere: not on this port
        text = "\r\n" + "\r\n".join(lines) + "\r\n"
        mode = self.settings.cnmi[0]
        busy = (self._busy or self._pdu_length is not None) and not self.fault_options.urcs_in_replies
        if sms and (mode == 0 or mode == 2 and busy):
            self._urc_buffer.append(text)
            return
        self._write(text.encode("ascii", "replace"))

    def _flush_urcs(self) -> None:
        if self._urc_buffer and self.settings.cnmi[0] != 0:
            buffered, self._urc_buffer = self._urc_buffer, []
            for text in buffered:
                self._write(text.encode("ascii", "replace"))

    def _ready_urcs(self) -> None:
        # Ready indications are left on this port whatever the URC port says, so that a
        # driver sees the modem come back (the SMS, call and network URCs are routed).
        for line in self.profile.ready_urcs:
            self._urc(line, ready=True)

    def _boot_urcs(self) -> None:
        self._write(f"\r\n{self.profile.boot_word}\r\n".encode())
        self._write(f"\r\n+CPIN: {self.sim.state}\r\n".encode())
        if self._sim_ready():
            self._ready_urcs()
            self._network_alert()

    def _network_alert(self) -> None:
        """Registered again: the network delivers what it held (the SMSC is alerted that
        the subscriber is reachable, TS 23.040 §3.2.5), a moment later — by then the TE
        has usually set its routing; what it has not is routed with the defaults."""
        if self._pending:
            self._later(self.network_retry, self._flush_pending)

    def _log_radio(self, record: dict[str, Any]) -> None:
        if self.radio_log is None:
            return
        with self.radio_log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    # -- timers and tasks --------------------------------------------------------------

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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- SIM and network state ---------------------------------------------------------

    def _sim_ready(self) -> bool:
        return self.sim.state == "READY"

    def _registered(self) -> bool:
        return self._sim_ready() and self.settings.fun == 1 and not self.unplugged

    def _reg_status(self) -> int:
        return 1 if self._registered() else 0

    def _registration_changed(self) -> None:
        stat = self._reg_status()
        for name, n in (("+CREG", self.settings.creg), ("+CGREG", self.settings.cgreg),
                        ("+CEREG", self.settings.cereg)):
            if n:
                self._urc(f"{name}: {stat}")

    def _need_sim(self, *, sms: bool = False) -> None:
        if self.sim.state == "READY":
            return
        if sms:
            raise cms(316 if self.sim.state == "SIM PUK" else 311)
        raise cme(12 if self.sim.state == "SIM PUK" else 11)

    # -- TE character set (AT+CSCS) ----------------------------------------------------

    def _text(self, value: str) -> str:
        """A string parameter in the TE character set."""
        if self.settings.cscs == "UCS2":
            return value.encode("utf-16-be").hex().upper()
        return value

    def _from_text(self, value: str) -> str:
        if self.settings.cscs == "UCS2":
            try:
                return bytes.fromhex(value).decode("utf-16-be")
            except ValueError:
                raise plain_error() from None
        return value


__all__ = ["CommandError", "ModemCore", "log", "now_iso", "now_scts", "toa"]
