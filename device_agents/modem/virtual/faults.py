"""Fault injection: what goes wrong with real modems, on demand.

- garbage: noise bytes between lines (a USB serial adapter's glitch);
- reboot: all volatile state lost, boot URCs again (a brown-out);
- unplug: the pty and its link vanish, a new one (another /dev/pts/N) comes
  back later (a USB cable pulled and put back, the kernel giving a new ttyUSB);
- slow: every reply block late (a modem busy with its radio).
"""

from __future__ import annotations

from .core import ModemCore, log
from .state import Settings


class Faults(ModemCore):
    slow: float
    _rx: bytearray
    _line: bytearray




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
        self.settings = Settings(cnmi=self.profile.cnmi_default)
        self._cpms = [self.memory.memories[0]] * 3
        self._cnma_expected = None
        self.slow = 0.0
        if self._call is not None:
            self._end_call(answered=self._call.answered_at is not None)
        self.sim.power_cycle()

    _cpms: list[str]

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
