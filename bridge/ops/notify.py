"""systemd's notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

``Type=notify`` services say ``READY=1`` once they serve, ``RELOADING=1`` /
``READY=1`` around a reload, ``STOPPING=1`` when they stop, ``STATUS=…`` for
``systemctl status``, and ``WATCHDOG=1`` at least every ``WatchdogSec``
(systemd passes it as ``$WATCHDOG_USEC``). Outside systemd (no
``$NOTIFY_SOCKET``) every call does nothing.

The watchdog ping is only sent after a real health check: the event loop
ran the check on time, and the store answered a trivial query. A wedged
daemon stops pinging and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, *, environ: dict[str, str] | os._Environ[str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()  # Linux abstract namespace
        elif path.startswith("/"):
            self.address = path
        self.watchdog_usec: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of ``WatchdogSec``; None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False if it could not be sent."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            if self._sock is None:
                # Non-blocking: a receiver that does not read (its queue full) must never
                # stall the event loop; that message is dropped instead.
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(data, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # say it once, not at every watchdog ping
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload match the reload to this message.
        return self.send("RELOADING=1", "STATUS=reloading configuration",
                         f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def watchdog_loop(self, check: Callable[[], Awaitable[None]]) -> None:
        """Ping at half of WatchdogSec while ``check()`` passes within that
        time and the loop is not running late. Returns at once without a watchdog."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        failing = False
        next_at = time.monotonic()
        while True:
            late = time.monotonic() - next_at
            try:
                if late > interval:
                    raise RuntimeError(f"event loop {late:.1f} s late")
                async with asyncio.timeout(interval):  # not wait_for: it can swallow a cancel on 3.11
                    await check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - unhealthy: do not ping
                if not failing:
                    log.error("health check failed, not pinging the watchdog: %s", exc or type(exc).__name__)
                failing = True
                self.status(f"unhealthy: {exc or type(exc).__name__}")
            else:
                if failing:
                    log.warning("health check passes again")
                    failing = False
                self.watchdog()
            next_at = time.monotonic() + interval
            await asyncio.sleep(interval)
