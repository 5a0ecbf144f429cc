"""Termux:API from Python: run the ``termux-*`` commands, parse their JSON.

termux-api's commands are thin shell wrappers around an Android app; when the
app is missing, lacks a permission or is killed, they usually print nothing
and exit 0. So every call here has a timeout and returns ``None`` when the
answer is not the JSON it should be: callers treat that as "unknown", never as
"empty".

Formats (termux-api's ``SmsInboxAPI``, ``CallLogAPI``, ``BatteryStatusAPI``,
``TelephonyAPI``):

* ``termux-sms-list`` → ``[{"threadid", "type", "read", "sender"?, "address",
  "number", "received": "yyyy-MM-dd HH:mm:ss", "body", "_id"}, …]`` — newest
  last; ``type`` is inbox|sent|draft|failed|outbox|queued (``-t`` only
  accepts all|inbox|sent|draft|outbox).
* ``termux-call-log`` → ``[{"name", "phone_number", "type": "INCOMING"|
  "OUTGOING"|"MISSED"|"REJECTED"|"BLOCKED"|"VOICEMAIL", "date":
  "yyyy-MM-dd HH:mm:ss", "duration": "mm:ss" or "hh:mm:ss", "sim_id"}, …]``
* times are the phone's wall clock, with no zone.

Pure standard library: this runs under Termux's Python on the phone.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

MAX_OUTPUT = 4 * 1024 * 1024  # a security limit on what one command may print
PHONE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class PhoneClock:
    """Turns the phone's zone-less wall-clock strings into Unix times."""

    def __init__(self, timezone: str | None) -> None:
        self.name = timezone
        self._zone: _dt.tzinfo | None = None
        if timezone:
            try:
                from zoneinfo import ZoneInfo
                self._zone = ZoneInfo(timezone)
            except Exception:  # noqa: BLE001 - no tzdata: fall back to the C library's zone
                log.warning("time zone %r unknown to Python here; using the process's local time",
                            timezone)

    def to_unix(self, text: str | None) -> float:
        if not text:
            return time.time()
        try:
            naive = _dt.datetime.strptime(text.strip()[:19], PHONE_TIME_FORMAT)
        except ValueError:
            return time.time()
        if self._zone is not None:
            return naive.replace(tzinfo=self._zone).timestamp()
        return time.mktime(naive.timetuple())  # Bionic's localtime knows the phone's zone

    def format(self, unix: float) -> str:
        if self._zone is not None:
            return _dt.datetime.fromtimestamp(unix, self._zone).strftime(PHONE_TIME_FORMAT)
        return time.strftime(PHONE_TIME_FORMAT, time.localtime(unix))


def parse_duration(text: Any) -> float:
    """``"01:02:03"`` / ``"02:03"`` / ``"123"`` → seconds; garbage → 0."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return max(0.0, float(text))
    if not isinstance(text, str):
        return 0.0
    total = 0
    try:
        for part in text.strip().split(":"):
            total = total * 60 + int(part)
    except ValueError:
        return 0.0
    return float(max(total, 0))


def detect_timezone() -> str | None:
    """The phone's IANA zone: $TZ, else Android's ``persist.sys.timezone``."""
    tz = os.environ.get("TZ")
    if tz and "/" in tz:
        return tz
    try:
        import subprocess
        out = subprocess.run(["getprop", "persist.sys.timezone"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


class TermuxApi:
    """Async calls to the termux-* commands found on ``PATH`` (or in ``bin_dir``)."""

    def __init__(self, *, bin_dir: str | None = None, timeout: float = 30.0) -> None:
        self.bin_dir = bin_dir
        self.timeout = timeout

    def _exe(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    async def run(self, name: str, *args: str, stdin: str | None = None,
                  limit_s: float | None = None) -> str | None:
        """stdout of one command, or None if it could not run, failed or hung."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self._exe(name), *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            log.warning("%s cannot run: %s", name, exc)
            return None
        try:
            async with asyncio.timeout(limit_s or self.timeout):
                out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("%s did not answer within %.0f s", name, limit_s or self.timeout)
            return None
        if proc.returncode != 0:
            log.warning("%s exited with %s: %s", name, proc.returncode,
                        err.decode(errors="replace").strip()[:200])
            return None
        if len(out) > MAX_OUTPUT:
            log.warning("%s printed more than %d bytes; ignored", name, MAX_OUTPUT)
            return None
        return out.decode("utf-8", errors="replace")

    async def _json(self, name: str, *args: str, kind: type) -> Any:
        out = await self.run(name, *args)
        if out is None or not out.strip():
            return None
        try:
            value = json.loads(out)
        except ValueError:
            log.warning("%s printed something that is not JSON", name)
            return None
        return value if isinstance(value, kind) else None

    # -- the commands ------------------------------------------------------

    async def sms_send(self, number: str, text: str, *, slot: int | None = None) -> bool:
        """Hand one SMS to Android. termux-sms-send tells nothing about the
        outcome: True only means the command ran. The text goes on stdin, so
        that nothing in it is read as an option or mangled by ``echo``."""
        args = ["-n", number]
        if slot is not None:
            args += ["-s", str(slot)]
        return await self.run("termux-sms-send", *args, stdin=text) is not None

    async def sms_list(self, box: str = "all", *, limit: int = 50) -> list[dict[str, Any]] | None:
        rows = await self._json("termux-sms-list", "-t", box, "-l", str(limit), kind=list)
        return None if rows is None else [r for r in rows if isinstance(r, dict)]

    async def call_log(self, *, limit: int = 50) -> list[dict[str, Any]] | None:
        rows = await self._json("termux-call-log", "-l", str(limit), kind=list)
        return None if rows is None else [r for r in rows if isinstance(r, dict)]

    async def battery(self) -> dict[str, Any] | None:
        return await self._json("termux-battery-status", kind=dict)

    async def device_info(self) -> dict[str, Any] | None:
        return await self._json("termux-telephony-deviceinfo", kind=dict)

    async def cell_info(self) -> list[dict[str, Any]] | None:
        return await self._json("termux-telephony-cellinfo", kind=list)

    async def call(self, number: str) -> bool:
        return await self.run("termux-telephony-call", number) is not None
