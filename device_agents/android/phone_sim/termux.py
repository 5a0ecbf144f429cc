"""Termux and Termux:API on the virtual phone.

Sources:
* termux-app ``app/src/main/AndroidManifest.xml``: ``RunCommandService`` is
  guarded by ``com.termux.permission.RUN_COMMAND`` (protection level
  dangerous), which the shell user does not hold — ``am startservice`` from
  ``adb shell`` answers ``Error: Requires permission
  com.termux.permission.RUN_COMMAND`` (AOSP ``ActivityManagerShellCommand.runStartService``
  prints ``Error: Requires permission X`` when ``startService`` returns
  ``!``/X); the maintainers say the same (termux/termux-app#1974); its
  other services are not exported.
* termux-api ``app/src/main/AndroidManifest.xml`` (``sharedUserId`` com.termux;
  requests READ_CALL_LOG, READ_SMS, SEND_SMS, CALL_PHONE, READ_CONTACTS,
  ACCESS_COARSE/FINE_LOCATION, READ_PHONE_STATE …; **not** RECEIVE_SMS).
* termux-api ``TermuxApiReceiver.java`` (per API the permissions checked
  before it runs) and ``util/TermuxApiPermissionActivity.java``: when one is
  missing the command prints ``{"error": "Please grant the following permission
  to use this command: X"}`` (pretty-printed: ``ResultReturner.ResultJsonWriter``
  sets a two-space indent; several permissions: "permissions", joined with
  `` ,``), exit 0, and a permission dialog opens on the phone:
  SmsInbox → READ_SMS + READ_CONTACTS; SmsSend → READ_PHONE_STATE + SEND_SMS; CallLog →
  READ_CALL_LOG; TelephonyCall → CALL_PHONE; TelephonyCellInfo →
  ACCESS_COARSE_LOCATION; TelephonyDeviceInfo → READ_PHONE_STATE;
  BatteryStatus, JobScheduler → none.
* termux-api ``SmsSendAPI.java``: ``sendMultipartTextMessage(number, null,
  parts, null, null)`` — no sent and no delivery intent, so no status report
  is requested and nothing is printed.
* ``SmsInboxAPI.java`` / ``CallLogAPI.java``: JSON arrays of ``{threadid,
  type, read, address, number, received "yyyy-MM-dd HH:mm:ss" (phone's zone),
  body, _id}`` / ``{name, phone_number, type, date, duration, sim_id}``;
  ``-l`` limit (10), ``-o`` offset (0), newest last.
* termux-app#2366: Android 12+ kills "phantom" child processes of apps
  (``activity_manager/max_phantom_processes``, default 32; off with
  ``settings put global settings_enable_monitor_phantom_procs false`` on
  12L+). :meth:`TermuxApp.phantom_killer_active` tells whether it would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import stat
import sys
from typing import TYPE_CHECKING, Any

from .packages import TERMUX_RUN_COMMAND, P, holds
from .sms import SmsRequest
from .state import Package

if TYPE_CHECKING:
    from .phone import VirtualPhone

TERMUX = "com.termux"
TERMUX_API = "com.termux.api"
TERMUX_BOOT = "com.termux.boot"
PREFIX = "/data/data/com.termux/files/usr"
HOME = "/data/data/com.termux/files/home"
TERMUX_REQUESTED = (P + "INTERNET", P + "WAKE_LOCK", P + "FOREGROUND_SERVICE", P + "VIBRATE",
                    P + "REQUEST_IGNORE_BATTERY_OPTIMIZATIONS", P + "SYSTEM_ALERT_WINDOW",
                    P + "READ_EXTERNAL_STORAGE", P + "WRITE_EXTERNAL_STORAGE", P + "ACCESS_NETWORK_STATE",
                    P + "RECEIVE_BOOT_COMPLETED", P + "POST_NOTIFICATIONS", P + "DUMP",
                    P + "WRITE_SECURE_SETTINGS", P + "PACKAGE_USAGE_STATS", P + "READ_LOGS")
API_REQUESTED = (P + "READ_CALL_LOG", P + "READ_SMS", P + "SEND_SMS", P + "CALL_PHONE", P + "READ_CONTACTS",
                 P + "CAMERA", P + "RECORD_AUDIO", P + "ACCESS_COARSE_LOCATION", P + "ACCESS_FINE_LOCATION",
                 P + "SET_WALLPAPER", P + "VIBRATE", P + "TRANSMIT_IR", P + "READ_PHONE_STATE",
                 P + "ACCESS_NETWORK_STATE", P + "ACCESS_WIFI_STATE", P + "CHANGE_WIFI_STATE",
                 P + "WRITE_SETTINGS", P + "USE_FINGERPRINT")
NEEDS = {
    "termux-sms-list": (P + "READ_SMS", P + "READ_CONTACTS"),
    "termux-sms-inbox": (P + "READ_SMS", P + "READ_CONTACTS"),
    "termux-sms-send": (P + "READ_PHONE_STATE", P + "SEND_SMS"),
    "termux-call-log": (P + "READ_CALL_LOG",),
    "termux-telephony-call": (P + "CALL_PHONE",),
    "termux-telephony-cellinfo": (P + "ACCESS_COARSE_LOCATION",),
    "termux-telephony-deviceinfo": (P + "READ_PHONE_STATE",),
    "termux-battery-status": (),
    "termux-job-scheduler": (),
}
SMS_TYPE_NAMES = {1: "inbox", 2: "sent", 3: "draft", 4: "outbox", 5: "failed", 6: "queued"}
SMS_TYPE_CODES = {"all": None, "inbox": 1, "sent": 2, "draft": 3, "outbox": 4}
CALL_TYPE_NAMES = {1: "INCOMING", 2: "OUTGOING", 3: "MISSED", 4: "VOICEMAIL", 5: "REJECTED", 6: "BLOCKED"}
MAX_REQUEST = 1024 * 1024

CLIENT = '''#!{python}
# A termux-api command on the virtual phone: asks the Termux:API app (the phone) over its socket.
import json, os, socket, sys
req = {{"cmd": os.path.basename(sys.argv[0]), "args": sys.argv[1:],
       "stdin": "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()}}
s = socket.socket(socket.AF_UNIX)
s.connect({sock!r})
s.sendall(json.dumps(req).encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
ans = json.loads(data or b'{{"stdout": "", "stderr": "termux-api: no answer\\\\n", "exit": 1}}')
sys.stdout.write(ans["stdout"]); sys.stderr.write(ans["stderr"]); sys.exit(ans["exit"])
'''

# The phone's 127.0.0.1 inside Termux processes: connect()/bind() to 127.0.0.1 go to the
# phone's loopback address on this machine (Python programs only; see docs/phone-sim.md).
SITECUSTOMIZE = '''import os, socket
_LOOP = os.environ.get("PHONE_SIM_LOOPBACK")
if _LOOP:
    def _map(address):
        if isinstance(address, tuple) and address and address[0] in ("127.0.0.1", "localhost"):
            return (_LOOP,) + tuple(address[1:])
        return address
    _connect, _connect_ex, _bind = socket.socket.connect, socket.socket.connect_ex, socket.socket.bind
    socket.socket.connect = lambda self, a: _connect(self, _map(a))
    socket.socket.connect_ex = lambda self, a: _connect_ex(self, _map(a))
    socket.socket.bind = lambda self, a: _bind(self, _map(a))
'''


class TermuxApp:
    """com.termux: the terminal; what the user types there runs as the Termux user."""

    def __init__(self, phone: VirtualPhone, api: TermuxApiApp) -> None:
        self.phone = phone
        self.api = api
        self.package = Package(TERMUX, requested=TERMUX_REQUESTED, uid=10233, version="0.118.1",
                               services={"com.termux.app.RunCommandService": TERMUX_RUN_COMMAND})
        self.processes: list[asyncio.subprocess.Process] = []
        self.root = phone.files.root
        self.bin = phone.data_dir / "termux-bin"
        self.home = phone.files.local(HOME)
        self.home.mkdir(parents=True, exist_ok=True)
        phone.files.local(PREFIX + "/bin").mkdir(parents=True, exist_ok=True)

    def screen(self) -> dict[str, Any]:
        return {"sessions": len([p for p in self.processes if p.returncode is None])}

    async def launch(self) -> None:
        await self.api.start_socket()

    async def boot(self) -> None:
        """Termux:Boot (com.termux.boot), when installed, runs ``~/.termux/boot/*`` in name order
        after BOOT_COMPLETED (termux-boot README); Termux itself starts nothing at boot."""
        await self.api.start_socket()
        if TERMUX_BOOT not in self.phone.state.packages:
            return
        boot_dir = self.home / ".termux" / "boot"
        if boot_dir.is_dir():
            for script in sorted(boot_dir.iterdir()):
                if script.is_file() and os.access(script, os.X_OK):
                    await self.type_command(str(script), wait=False)

    async def stop(self) -> None:
        for proc in self.processes:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self.processes.clear()
        await self.api.stop()

    def start_service(self, cls: str, *, foreground: bool) -> str | None:
        full = cls if not cls.startswith(".") else TERMUX + cls
        perm = self.package.services.get(full)
        if perm is not None:
            return f"Error: Requires permission {perm}"
        return f"Error: Requires permission not exported from uid {self.package.uid}"

    def running_services(self) -> list[str]:
        live = [p for p in self.processes if p.returncode is None]
        return [f"{TERMUX}/.app.TermuxService"] if live else []

    def receive_sms(self, row: dict[str, Any]) -> None:
        return None

    def phantom_killer_active(self) -> bool:
        sdk = int(self.phone.state.props["ro.build.version.sdk"])
        if sdk < 31:
            return False
        flag = self.phone.state.settings["global"].get("settings_enable_monitor_phantom_procs")
        return not (sdk >= 32 and flag == "false")

    def environment(self) -> dict[str, str]:
        self.bin.mkdir(parents=True, exist_ok=True)
        client = CLIENT.format(python=sys.executable, sock=str(self.api.socket_path))
        for name in NEEDS:
            path = self.bin / name
            path.write_text(client)
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (self.bin / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TERM", "TMPDIR")}
        env.update({"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                    "HOME": str(self.home), "PREFIX": str(self.phone.files.local(PREFIX)),
                    "PYTHONPATH": str(self.bin), "PHONE_SIM_LOOPBACK": self.phone.loopback,
                    "TERMUX_VERSION": self.package.version})
        return env

    async def type_command(self, command: str, *, wait: bool = True,
                           limit_s: float | None = 60) -> tuple[int | None, str, str]:
        """The user types ``command`` in a Termux session (runs as the Termux user)."""
        await self.api.start_socket()
        if not wait:
            # A session left running: its output goes to DATA/termux-sessions/N.log.
            logs = self.phone.data_dir / "termux-sessions"
            logs.mkdir(exist_ok=True)
            log_path = shlex.quote(str(logs / f"{len(self.processes) + 1}.log"))
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", f"exec >>{log_path} 2>&1\n{command}", cwd=self.home, env=self.environment(),
                stdin=asyncio.subprocess.DEVNULL)
            self.processes.append(proc)
            return None, "", ""
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=self.home, env=self.environment(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self.processes.append(proc)
        out, err = await asyncio.wait_for(proc.communicate(), limit_s)
        return proc.returncode, out.decode(), err.decode()


class TermuxApiApp:
    """com.termux.api: the app behind the termux-* commands."""

    def __init__(self, phone: VirtualPhone) -> None:
        self.phone = phone
        self.package = Package(TERMUX_API, requested=API_REQUESTED, uid=10233, version="0.50.1")
        self.socket_path = phone.data_dir / "termux-api.sock"
        self._server: asyncio.base_events.Server | None = None
        self.dialogs: list[tuple[str, ...]] = []  # permission dialogs opened on the phone
        self.jobs: dict[str, dict[str, Any]] = phone.state.app_data.setdefault("termux_jobs", {})
        self.terminal: TermuxApp | None = None

    def screen(self) -> dict[str, Any]:
        return {"permission_dialogs": [list(d) for d in self.dialogs]}

    async def launch(self) -> None:
        await self.start_socket()

    async def boot(self) -> None:
        # JobScheduler forgets jobs not scheduled with --persisted true (JobInfo.setPersisted).
        for key in [k for k, job in self.jobs.items() if not job["persisted"]]:
            del self.jobs[key]
        self.phone.state.save()
        await self.start_socket()

    async def run_jobs(self) -> int:
        """JobScheduler runs the scheduled jobs (the test decides when): each script starts as the
        Termux user (termux-api SchedulerJobService). Returns how many were started."""
        if self.terminal is None:
            return 0
        for job in list(self.jobs.values()):
            await self.terminal.type_command(job["script"], wait=False)
        return len(self.jobs)

    async def start_socket(self) -> None:
        if self._server is None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            self._server = await asyncio.start_unix_server(self._client, str(self.socket_path),
                                                           limit=MAX_REQUEST)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def start_service(self, cls: str, *, foreground: bool) -> str | None:
        return f"Error: Requires permission not exported from uid {self.package.uid}"

    def running_services(self) -> list[str]:
        return []

    def receive_sms(self, row: dict[str, Any]) -> None:
        return None

    def user_allow_dialogs(self) -> None:
        """The user taps Allow on every permission dialog Termux:API opened."""
        for perms in self.dialogs:
            self.package.granted.update(perms)
        self.dialogs.clear()
        self.phone.state.save()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            req = json.loads(line)
            out, err, code = await self.run(str(req["cmd"]), [str(a) for a in req.get("args", [])],
                                             str(req.get("stdin", "")))
        except Exception as exc:  # noqa: BLE001 - the command prints the failure
            out, err, code = "", f"termux-api: {exc}\n", 1
        writer.write(json.dumps({"stdout": out, "stderr": err, "exit": code}).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    # -- the commands ------------------------------------------------------------------------------
    async def run(self, cmd: str, args: list[str], stdin: str = "") -> tuple[str, str, int]:
        needs = NEEDS.get(cmd)
        if needs is None:
            return "", f"{cmd}: not provided by this Termux:API\n", 127
        missing = tuple(p for p in needs if not holds(self.package, p))
        if missing:
            self.dialogs.append(missing)
            # TermuxApiPermissionActivity.checkAndRequestPermissions: "permission" + "s" when
            # several, joined with " ," (sic); written by ResultJsonWriter (JsonWriter, indent "  ").
            word = "permission" if len(missing) == 1 else "permissions"
            text = f"Please grant the following {word} to use this command: {' ,'.join(missing)}"
            return json.dumps({"error": text}, indent=2) + "\n", "", 0
        handler = getattr(self, "_" + cmd.replace("-", "_"))
        return await handler(args, stdin)

    @staticmethod
    def _opts(args: list[str], spec: str) -> tuple[dict[str, str], list[str]]:
        import getopt
        opts, rest = getopt.getopt(args, spec)
        return {k: v for k, v in opts}, rest

    def _local(self, ms: int) -> str:
        from zoneinfo import ZoneInfo
        return dt.datetime.fromtimestamp(ms / 1000, ZoneInfo(self.phone.state.timezone)).strftime(
            "%Y-%m-%d %H:%M:%S")

    async def _termux_sms_send(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        opts, rest = self._opts(args, "n:s:")
        if "-n" not in opts:
            return "", "termux-sms-send: no recipient number given\n", 1
        text = " ".join(rest) if rest else stdin
        sim = int(opts.get("-s", "0") or 0) + 1 if "-s" in opts else 1
        for number in opts["-n"].split(","):
            # SmsSendAPI: no sent intent, no delivery intent.
            self.phone.sms.send(SmsRequest(app=TERMUX_API, address=number.strip(), text=text, sub_id=sim,
                                           want_delivery=False, on_event=lambda kind, info: None))
        return "", "", 0

    async def _termux_sms_list(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        opts, _ = self._opts(args, "dl:no:t:c:f:")
        limit, offset = int(opts.get("-l", 10)), int(opts.get("-o", 0))
        kind = opts.get("-t", "inbox")
        if kind not in SMS_TYPE_CODES:
            return "", f"Unsupported type: {kind}\n", 1
        code = SMS_TYPE_CODES[kind]
        with self.phone.state.lock:
            rows = [dict(r) for r in self.phone.state.sms if code is None or r["type"] == code]
        rows.sort(key=lambda r: r["date"], reverse=True)
        rows = rows[offset:offset + limit][::-1]
        out = [{"threadid": r["thread_id"], "type": SMS_TYPE_NAMES.get(r["type"], str(r["type"])),
                "read": bool(r["read"]), "address": r["address"], "number": r["address"],
                "received": self._local(r["date"]), "body": r["body"], "_id": r["_id"]} for r in rows]
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n", "", 0

    _termux_sms_inbox = _termux_sms_list

    async def _termux_call_log(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        opts, _ = self._opts(args, "l:o:")
        limit, offset = int(opts.get("-l", 10)), int(opts.get("-o", 0))
        with self.phone.state.lock:
            rows = sorted((dict(r) for r in self.phone.state.calls), key=lambda r: r["date"], reverse=True)
        rows = rows[offset:offset + limit][::-1]
        out = []
        for r in rows:
            minutes, seconds = divmod(int(r["duration"]), 60)
            hours, minutes = divmod(minutes, 60)
            duration = f"{hours:02d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
            out.append({"name": r["name"] or "UNKNOWN_CALLER", "phone_number": r["number"],
                        "type": CALL_TYPE_NAMES.get(r["type"], "UNKNOWN"), "date": self._local(r["date"]),
                        "duration": duration, "sim_id": r["subscription_id"]})
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n", "", 0

    async def _termux_telephony_call(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        if not args:
            return "", "usage: termux-telephony-call <phone-number>\n", 1
        self.phone.place_call(args[0])
        return "", "", 0

    async def _termux_telephony_deviceinfo(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        p = self.phone.state.props
        info = {"data_enabled": "true", "data_activity": "none", "data_state": "connected",
                "device_id": None, "device_software_version": "01", "phone_count": 1, "phone_type": "gsm",
                "network_operator": p["gsm.operator.numeric"], "network_operator_name": p["gsm.operator.alpha"],
                "network_country_iso": "fr", "network_type": "lte", "network_roaming": False,
                "sim_country_iso": "fr", "sim_operator": p["gsm.operator.numeric"],
                "sim_operator_name": p["gsm.operator.alpha"], "sim_serial_number": None,
                "sim_subscriber_id": None, "sim_state": "ready" if self.phone.sms.radio.in_service else "absent"}
        return json.dumps(info, indent=2) + "\n", "", 0

    async def _termux_telephony_cellinfo(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        cells = [{"type": "lte", "registered": True, "asu": 40, "dbm": -100, "level": 3, "ci": 1234,
                  "pci": 7, "tac": 300, "mcc": 208, "mnc": 1}] if self.phone.sms.radio.in_service else []
        return json.dumps(cells, indent=2) + "\n", "", 0

    async def _termux_battery_status(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        info = {"present": True, "technology": "Li-ion", "health": "GOOD", "plugged": "PLUGGED_USB",
                "status": "CHARGING", "temperature": 27.5, "voltage": 4123, "current": 350000,
                "percentage": 81, "level": 81, "scale": 100}
        return json.dumps(info, indent=2) + "\n", "", 0

    async def _termux_job_scheduler(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        # JobSchedulerAPI: --job-id, -s/--script, --period-ms (>= 15 min on Android 7+),
        # --persisted (survives reboots; needs RECEIVE_BOOT_COMPLETED), --cancel, --cancel-all, -p (pending).
        words = list(args)
        opts: dict[str, str] = {}
        i = 0
        while i < len(words):
            w = words[i]
            if w in ("--cancel-all", "-p", "--pending"):
                opts[w] = "true"
                i += 1
            elif w.startswith("-") and i + 1 < len(words):
                opts[w] = words[i + 1]
                i += 2
            else:
                i += 1
        if "--cancel-all" in opts:
            self.jobs.clear()
            self.phone.state.save()
            return "", "", 0
        if "-p" in opts or "--pending" in opts:
            return "".join(f"Pending {json.dumps(j)}\n" for j in self.jobs.values()), "", 0
        job_id = int(opts.get("--job-id", "0"))
        if "--cancel" in opts:
            self.jobs.pop(str(job_id), None)
            self.phone.state.save()
            return "", "", 0
        script = opts.get("-s") or opts.get("--script")
        if not script:
            return "", "No script path given\n", 1
        period = int(opts.get("--period-ms", "0"))
        script = script.replace("~", str(self.terminal.home) if self.terminal else "~", 1) \
            if script.startswith("~") else script
        job = {"id": job_id, "script": script, "period_ms": period,
               "persisted": opts.get("--persisted", "false") == "true"}
        self.jobs[str(job_id)] = job
        self.phone.state.save()
        return f"Scheduling {shlex.quote(script)}: job {job_id}, period {period} ms\n", "", 0


def install_termux(phone: VirtualPhone, *, boot_addon: bool = False) -> tuple[TermuxApp, TermuxApiApp]:
    """Termux and Termux:API (and, with ``boot_addon``, the Termux:Boot add-on's package)."""
    api = TermuxApiApp(phone)
    term = TermuxApp(phone, api)
    api.terminal = term
    if boot_addon:
        phone.state.packages[TERMUX_BOOT] = Package(TERMUX_BOOT, requested=(P + "RECEIVE_BOOT_COMPLETED",),
                                                    uid=10233, version="0.8.1")
    phone.install(term)
    phone.install(api)
    return term, api
