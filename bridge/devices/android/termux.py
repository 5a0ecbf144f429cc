"""Sending through Termux + Termux:API: the route that needs no third app.

What Android lets the bridge do for it over adb, and what it does not:

* Termux's ``RunCommandService`` requires ``com.termux.permission.RUN_COMMAND``
  (termux-app ``AndroidManifest.xml``), which the shell user does not hold:
  adb cannot start anything inside Termux on a stock phone (termux-app#1974).
  So the helper is started once by the person with the phone, with a command
  typed in Termux (:func:`install_command`); it keeps itself running (a
  persisted ``termux-job-scheduler`` job) and the bridge only reverses its
  port and updates it.
* ``pm grant com.termux.api <perm>`` works only for a permission Termux:API's
  manifest requests (AOSP ``PermissionManagerService.grantRuntimePermission``:
  "has not requested permission" otherwise). ``termux-sms-send`` needs
  SEND_SMS and READ_PHONE_STATE (termux-api ``TermuxApiReceiver.java``), both
  requested. SMS permissions are *hard restricted* (Android 10+): for an app
  whose installer did not allow-list them, the grant is skipped (only logged),
  and Termux:API answers every command with ``{"error": "Please grant the
  following permission…"}`` and opens the permission dialog on the phone
  (``TermuxApiPermissionActivity.checkAndRequestPermissions``). The bridge
  recognises that answer and shows the tap the person must make.
* ``termux-sms-send`` gives no result and passes no sent or delivery intent
  (termux-api ``SmsSendAPI.java``): the bridge learns whether the message went
  out from the row Android writes into ``content://sms`` for an app that is
  not the default SMS app (type 2 sent, 5 failed; AOSP ``SMSDispatcher``
  ``SmsTracker.persistOrUpdateMessage``). No delivery reports on this route.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import time
from importlib import resources
from typing import Any

from aiohttp import web

TERMUX = "com.termux"
TERMUX_API = "com.termux.api"
PERMISSIONS = ("SEND_SMS", "READ_PHONE_STATE")  # both in termux-api's AndroidManifest.xml
DEFAULT_PORT = 18766  # on the phone's loopback, reversed to the bridge
POLL_HOLD = 25.0  # seconds a helper's poll is held open
JOB_ID = 52370  # termux-job-scheduler job id of the helper's keeper

_ERROR = re.compile(r'\{\s*"error"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}')
_PERMISSION = re.compile(r"android\.permission\.([A-Z_]+)")


def helper_source() -> bytes:
    return resources.files("device_agents.android").joinpath("helper.py").read_bytes()


def helper_version() -> str:
    return hashlib.sha256(helper_source()).hexdigest()[:16]


def derive(token: str, purpose: str, size: int = 24) -> str:
    return hmac.new(token.encode(), f"termux:{purpose}".encode(), hashlib.sha256).hexdigest()[:size]


def install_command(port: int, code: str) -> str:
    """What the person with the phone types once in Termux (Python fetches the
    installer: Termux's ``python`` package has everything it needs)."""
    return (f"pkg install -y python termux-api; python3 -c \"import urllib.request as u; exec(u.urlopen("
            f"'http://127.0.0.1:{port}/termux/install/{code}').read())\"")


def api_error(output: str) -> str | None:
    """Termux:API's ``{"error": "…"}`` answer, if that is what it printed."""
    found = _ERROR.search(output)
    if not found:
        return None
    try:
        return str(json.loads(f'"{found.group(1)}"'))
    except ValueError:
        return found.group(1)


def missing_permissions(error: str) -> list[str]:
    return _PERMISSION.findall(error)


INSTALLER = """# simbridge helper installer (run once in Termux; running it again changes nothing in place)
import json, os, shutil, subprocess, sys, urllib.request
URL = {url!r}
D = os.path.join(os.path.expanduser("~"), ".simbridge")
os.makedirs(D, mode=0o700, exist_ok=True)
source = urllib.request.urlopen(URL + "/helper.py", timeout=30).read()
with open(os.path.join(D, "helper.py.new"), "wb") as f:
    f.write(source)
os.replace(os.path.join(D, "helper.py.new"), os.path.join(D, "helper.py"))
old = os.umask(0o077)
with open(os.path.join(D, "helper.json"), "w") as f:
    json.dump({{"url": URL}}, f)
run = os.path.join(D, "run.sh")
with open(run, "w") as f:
    # The sh this Termux has ($PREFIX/bin/sh): JobScheduler runs the script by its path.
    f.write("#!%s\\n" % (shutil.which("sh") or "/data/data/com.termux/files/usr/bin/sh"))
    f.write(
"termux-wake-lock 2>/dev/null\\n"
            "exec %s %s/helper.py %s/helper.json >> %s/helper.log 2>&1\\n" % (sys.executable, D, D, D))
os.chmod(run, 0o700)
os.umask(old)
# A persisted job: runs the keeper again after a reboot and every 15 min (a running helper holds its lock).
r = subprocess.run(["termux-job-scheduler", "--job-id", "{job_id}", "--period-ms", "900000",
                    "--persisted", "true", "--script", run], capture_output=True, text=True)
if r.returncode != 0:
    print("termux-job-scheduler failed: the helper will not restart by itself:", r.stdout, r.stderr)
subprocess.Popen(["sh", run], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("simbridge helper installed and started; the bridge sees it within seconds")
"""


def install_script(url: str) -> str:
    """The one-time installer (Python): the helper into ``~/.simbridge``, its
    keeper job, and a first start."""
    return INSTALLER.format(url=url, job_id=JOB_ID)


class HelperLink:
    """The bridge's end of one phone's helper: HTTP on 127.0.0.1 (reversed to the phone)."""

    def __init__(self, *, secret: str, code: str, reverse_port: int) -> None:
        self.secret = secret
        self.code = code
        self.reverse_port = reverse_port
        self.port = 0
        self.version: str | None = None
        self.last_poll = 0.0
        self.polling = 0
        self.seen = asyncio.Event()
        self._commands: collections.deque[dict[str, Any]] = collections.deque()
        self._posted = asyncio.Event()
        self._closing = False
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.reverse_port}/termux/{self.secret}"

    def alive(self, now: float | None = None) -> bool:
        """A helper polls now, or did within one hold time."""
        if self.polling > 0:
            return True
        return (time.monotonic() if now is None else now) - self.last_poll < POLL_HOLD + 10

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get(f"/termux/install/{self.code}", self._install)
        base = f"/termux/{self.secret}"
        app.router.add_get(f"{base}/helper.py", self._helper)
        app.router.add_get(f"{base}/next", self._next)
        app.router.add_post(f"{base}/result", self._result)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._closing = True
        self._posted.set()  # held polls answer at once
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self, cmd: dict[str, Any], wait_s: float) -> dict[str, Any]:
        """Hand one command to the helper; its answer (``rc``, ``out``)."""
        cmd = dict(cmd, id=str(next(self._ids)))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cmd["id"]] = fut  # the waiter exists before the helper can answer
        self._commands.append(cmd)
        self._posted.set()
        try:
            async with asyncio.timeout(wait_s):
                return await fut
        finally:
            self._waiting.pop(cmd["id"], None)

    async def _install(self, request: web.Request) -> web.Response:
        return web.Response(text=install_script(self.url), content_type="text/x-python")

    async def _helper(self, request: web.Request) -> web.Response:
        return web.Response(body=helper_source(), content_type="text/x-python")

    async def _next(self, request: web.Request) -> web.Response:
        self.version = request.query.get("version")
        self.last_poll = time.monotonic()
        self.seen.set()
        if self.version != helper_version():
            return web.json_response({"cmd": "update"})
        self.polling += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_HOLD):
                    while not self._closing:
                        while self._commands:
                            cmd = self._commands.popleft()
                            if cmd["id"] not in self._waiting:
                                continue  # its sender gave up
                            if request.transport is None or request.transport.is_closing():
                                # This poll's connection died (the phone was unplugged):
                                # the command waits for the next poll.
                                self._commands.appendleft(cmd)
                                return web.Response(status=204)
                            return web.json_response(cmd)
                        self._posted.clear()
                        await self._posted.wait()
            return web.Response(status=204)
        finally:
            self.polling -= 1
            self.last_poll = time.monotonic()

    async def _result(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"message": "not JSON"}, status=400)
        fut = self._waiting.get(str(body.get("id"))) if isinstance(body, dict) else None
        if fut is not None and not fut.done():
            fut.set_result(body)
        return web.json_response({"ok": True})
