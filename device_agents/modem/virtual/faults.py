"""Fault injection: what goes wrong with real modems, on demand.

Now, from the control API:

- garbage: noise bytes between lines (a USB serial adapter's glitch);
- reboot: all volatile state lost, boot URCs again (a brown-out);
- unplug: the pty and its link vanish, a new one (another /dev/pts/N) comes
  back later (a USB cable pulled and put back, the kernel giving a new ttyUSB);
- slow: every reply block late (a modem busy with its radio).

All along, as options of any profile (:class:`FaultOptions`):

- network_delay: AT+CMGS prompts at once and the message goes on the air,
  but the final result comes this many seconds later (a slow network: the
  modem waits for the SMSC's RP-ACK; ModemManager gives AT+CMGS 5 minutes);
- cms500_rate: that share of AT+CMGS ends in +CMS ERROR: 500 (nothing sent);
- split_lines: output leaves in pieces cut anywhere, with pauses between
  (USB bulk transfers and UART FIFOs cut lines where they like);
- urcs_in_replies: an unsolicited line in the middle of replies, and SMS
  indications sent at once even while a command runs (as with <mode>=1/3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from .core import ModemCore, log
from .state import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultOptions:
    network_delay: float = 0.0
    cms500_rate: float = 0.0
    split_lines: bool = False
    urcs_in_replies: bool = False


class SplitWriter:
    """Writes in pieces cut at random places, a short pause between pieces, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pick: Callable[[int, int], int]) -> None:
        self._loop = loop
        self._pick = pick
        self._queue: list[tuple[Callable[[bytes], None], bytes]] = []
        self._busy = False

    def write(self, sink: Callable[[bytes], None], data: bytes) -> None:
        while data:
            cut = self._pick(1, max(1, min(len(data), 24)))
            self._queue.append((sink, data[:cut]))
            data = data[cut:]
        if not self._busy:
            self._next()

    def _next(self) -> None:
        if not self._queue:
            self._busy = False
            return
        self._busy = True
        sink, piece = self._queue.pop(0)
        sink(piece)
        self._loop.call_later(0.002, self._next)

    def clear(self) -> None:
        self._queue.clear()


class Faults(ModemCore):
    slow: float
    _rx: bytearray
    _line: bytearray
    noise_on: bool

    def _noise(self) -> None:
        """The profile's unasked URC, now and then (Huawei's ^RSSI)."""
        if self._closed or self.profile.noise_interval is None:
            return
        if self._pty is not None and self._sim_ready() and self.noise_on:
            self._write(f"\r\n{self.profile.noise_urc}\r\n".encode())
        self._later(self.profile.noise_interval, self._noise)




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
        if self._splitter is not None:
            self._splitter.clear()
        self.settings = Settings(cnmi=self.profile.cnmi_default)
        self._cpms = list(self.profile.cpms_default)
        self._cancel_timer(self._ack_timer)
        self._cnma_expected = None
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
