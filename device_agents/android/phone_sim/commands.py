"""The commands the shell user finds on the virtual phone, each after its AOSP source.

Only what a gateway bridge runs is here; anything else is "inaccessible or not
found" (see :mod:`.shell`). Sources are named next to each command.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from .packages import PermissionError_, check_grant, stack_trace
from .shell import Command, Io
from .state import CALL_COLUMNS, SMS_COLUMNS, Package, PhoneState


class Device(Protocol):
    state: PhoneState

    def place_call(self, number: str) -> None: ...
    def start_activity(self, pkg: str, cls: str, action: str | None, data: str | None) -> str | None: ...
    def start_service(self, pkg: str, cls: str, *, foreground: bool) -> str | None: ...
    def force_stop(self, pkg: str) -> None: ...
    def running_services(self, pkg: str) -> list[str]: ...


def safe_uri(uri: str) -> str:
    """``Uri.toSafeString`` (AOSP core/java/android/net/Uri.java): tel:, sms:, smsto:,
    mailto: and sip: keep their scheme and hide every other character as 'x'."""
    scheme, sep, rest = uri.partition(":")
    if sep and scheme.lower() in ("tel", "sip", "sms", "smsto", "mailto", "nfc"):
        return scheme + ":" + "x" * len(rest)
    return uri


def intent_text(action: str | None, data: str | None, component: str | None, extras: bool) -> str:
    """``Intent.toShortString`` as ``am`` prints it: ``Intent { act=… dat=… cmp=… (has extras) }``."""
    parts = []
    if action:
        parts.append(f"act={action}")
    if data:
        parts.append(f"dat={safe_uri(data)}")
    if component:
        parts.append(f"cmp={component}")
    if extras:
        parts.append("(has extras)")
    return "Intent { " + " ".join(parts) + " }"


class Commands:
    def __init__(self, device: Device) -> None:
        self.device = device
        self.state = device.state
        self.input_log: list[list[str]] = []

    def table(self) -> dict[str, Command]:
        table: dict[str, Command] = {
            "getprop": self.getprop, "setprop": self.setprop, "pm": self.pm, "cmd": self.cmd,
            "am": self.am, "content": self.content, "settings": self.settings,
            "device_config": self.device_config, "dumpsys": self.dumpsys, "input": self.input,
            "monkey": self.monkey, "run-as": self.run_as, "id": self.id_, "echo": self.echo,
            "true": self.true, "false": self.false, "date": self.date, "cat": self.cat,
            "grep": self.grep, "head": self.head, "wc": self.wc, "which": self.which,
            "uname": self.uname, "ls": self.ls,
        }
        return table

    # -- small toybox tools ----------------------------------------------------------
    async def true(self, argv: list[str], io: Io) -> int:
        return 0

    async def false(self, argv: list[str], io: Io) -> int:
        return 1

    async def echo(self, argv: list[str], io: Io) -> int:
        args = argv[1:]
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        io.out(" ".join(args) + ("\n" if newline else ""))
        return 0

    async def id_(self, argv: list[str], io: Io) -> int:
        # The shell user: AOSP android_filesystem_config.h AID_SHELL = 2000.
        io.out("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),"
               "1011(adb),1015(sdcard_rw),1028(sdcard_r),3001(net_bt_admin),3002(net_bt),"
               "3003(inet),3006(net_bw_stats),3009(readproc),3011(uhid) context=u:r:shell:s0\n")
        return 0

    async def uname(self, argv: list[str], io: Io) -> int:
        io.out("Linux\n" if len(argv) == 1 else "Linux localhost 5.10.198-android13-4 aarch64\n")
        return 0

    async def date(self, argv: list[str], io: Io) -> int:
        if len(argv) > 1 and argv[1] == "+%s":
            io.out(f"{int(time.time())}\n")
        elif len(argv) > 1 and argv[1] == "+%Z":
            io.out(time.strftime("%Z") + "\n")
        else:
            io.out(time.strftime("%a %b %d %H:%M:%S %Z %Y") + "\n")
        return 0

    async def which(self, argv: list[str], io: Io) -> int:
        status = 0
        table = self.table()
        for name in argv[1:]:
            if name in table:
                io.out(f"/system/bin/{name}\n")
            else:
                status = 1
        return status

    async def cat(self, argv: list[str], io: Io) -> int:
        if len(argv) == 1:
            io.out(io.stdin.decode("utf-8", "replace"))
            return 0
        for path in argv[1:]:
            io.err(f"cat: {path}: No such file or directory\n" if not path.startswith("/data/data/")
                   else f"cat: {path}: Permission denied\n")
        return 1

    async def ls(self, argv: list[str], io: Io) -> int:
        paths = [a for a in argv[1:] if not a.startswith("-")]
        for path in paths:
            if path.startswith("/data/data/") or path == "/data":
                io.err(f"ls: {path}: Permission denied\n")
                return 1
        return 0

    async def grep(self, argv: list[str], io: Io) -> int:
        flags = {a for a in argv[1:] if a.startswith("-")}
        words = [a for a in argv[1:] if not a.startswith("-")]
        if not words:
            io.err("usage: grep [-EFHIabchilnoqrsvwxz] PATTERN [FILE...]\n")
            return 2
        pattern = words[0]
        lines = io.stdin.decode("utf-8", "replace").splitlines()
        opts = re.IGNORECASE if any("i" in f for f in flags) else 0
        fixed = any("F" in f for f in flags)
        invert = any("v" in f for f in flags)
        regex = re.compile(re.escape(pattern) if fixed else pattern, opts)
        hits = [ln for ln in lines if bool(regex.search(ln)) != invert]
        if any("c" in f for f in flags):
            io.out(f"{len(hits)}\n")
        elif not any("q" in f for f in flags):
            io.out("".join(h + "\n" for h in hits))
        return 0 if hits else 1

    async def head(self, argv: list[str], io: Io) -> int:
        n = 10
        if len(argv) > 2 and argv[1] == "-n":
            n = int(argv[2])
        io.out("".join(ln + "\n" for ln in io.stdin.decode("utf-8", "replace").splitlines()[:n]))
        return 0

    async def wc(self, argv: list[str], io: Io) -> int:
        io.out(f"{len(io.stdin.splitlines())}\n")
        return 0

    # -- getprop / setprop (AOSP system/core/toolbox/getprop.cpp) -----------------------
    async def getprop(self, argv: list[str], io: Io) -> int:
        props = self.state.props
        if len(argv) == 1:
            io.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        else:
            io.out(props.get(argv[1], argv[2] if len(argv) > 2 else "") + "\n")
        return 0

    async def setprop(self, argv: list[str], io: Io) -> int:
        # init's property_service: the shell domain may set debug.*/log.* only (SELinux policy).
        if len(argv) != 3:
            io.err("usage: setprop NAME VALUE\n")
            return 1
        if not argv[1].startswith(("debug.", "log.")):
            io.err(f"Failed to set property '{argv[1]}' to '{argv[2]}'.\nSee dmesg for error reason.\n")
            return 1
        self.state.props[argv[1]] = argv[2]
        return 0

    # -- pm / cmd package (AOSP PackageManagerShellCommand.java) --------------------------
    async def cmd(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2:
            io.err("cmd: No service specified; use -l to list all running services\n")
            return 20
        service = argv[1]
        if service == "package":
            return await self.pm(["pm", *argv[2:]], io)
        if service == "activity":
            return await self.am(["am", *argv[2:]], io)
        if service == "settings":
            return await self.settings(["settings", *argv[2:]], io)
        if service == "device_config":
            return await self.device_config(["device_config", *argv[2:]], io)
        if service == "deviceidle":
            return await self._deviceidle(argv[2:], io)
        if service == "appops":
            return await self._appops(argv[2:], io)
        io.err(f"cmd: Can't find service: {service}\n")
        return 20

    def _pkg(self, name: str) -> Package | None:
        return self.state.packages.get(name)

    async def pm(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2:
            io.err("Package manager (package) commands:\n  help\n")
            return 255
        verb, args = argv[1], argv[2:]
        if verb == "list" and args[:1] == ["packages"]:
            opts = [a for a in args[1:] if a.startswith("-")]
            filt = next((a for a in args[1:] if not a.startswith("-")), "")
            for name in sorted(self.state.packages):
                if filt and filt not in name:
                    continue
                system = self.state.packages[name].system
                if ("-3" in opts and system) or ("-s" in opts and not system):
                    continue
                line = f"package:{name}"
                if "-f" in opts:
                    line = f"package:{self._apk(name)}={name}"
                io.out(line + "\n")
            return 0
        if verb == "path":
            if not args or self._pkg(args[0]) is None:
                return 1  # pm path of an unknown package prints nothing, exit 1
            io.out(f"package:{self._apk(args[0])}\n")
            return 0
        if verb in ("grant", "revoke"):
            if len(args) < 2:
                io.err("Error: no permission specified\n" if len(args) == 1
                       else "Error: no package specified\n")
                return 255
            name, perm = args[-2], args[-1]
            pkg = self._pkg(name)
            try:
                check_grant(pkg, name, perm)
            except PermissionError_ as exc:
                io.err(stack_trace(verb, exc, "com.android.server.pm.permission."
                                   "PermissionManagerServiceImpl.grantRuntimePermissionInternal"
                                   "(PermissionManagerServiceImpl.java)"))
                return 255
            assert pkg is not None
            (pkg.granted.add if verb == "grant" else pkg.granted.discard)(perm)
            self.state.save()
            self.state.notify("grant", {"package": name, "permission": perm, "granted": verb == "grant"})
            return 0
        if verb == "dump":
            return await self._dump_package(args[0] if args else "", io)
        io.err(f"Unknown command: {verb}\n")
        return 255

    @staticmethod
    def _apk(name: str) -> str:
        token = abs(hash(name)) % 10**8
        return f"/data/app/~~{token:08d}AbCdEf==/{name}-{token:08d}XyZ==/base.apk"

    async def _dump_package(self, name: str, io: Io) -> int:
        # The parts of `dumpsys package PKG` a bridge reads (PackageManagerService dump).
        pkg = self._pkg(name)
        if pkg is None:
            io.out(f"Unable to find package: {name}\n")
            return 0
        from .packages import RUNTIME_PERMISSIONS
        lines = ["Packages:", f"  Package [{name}] ({abs(hash(name)) % 0xFFFFFFF:07x}):",
                 f"    userId={pkg.uid}", f"    versionName={pkg.version}",
                 f"    codePath={self._apk(name).rsplit('/', 1)[0]}", "    requested permissions:"]
        lines += [f"      {p}" for p in pkg.requested]
        lines.append("    install permissions:")
        lines += [f"      {p}: granted=true" for p in pkg.requested if p not in RUNTIME_PERMISSIONS]
        lines.append("    User 0: ceDataInode=1 installed=true hidden=false suspended=false "
                     "stopped=false notLaunched=false enabled=0 instant=false virtual=false")
        lines.append("      runtime permissions:")
        for p in pkg.requested:
            if p in RUNTIME_PERMISSIONS:
                lines.append(f"        {p}: granted={'true' if p in pkg.granted else 'false'}, "
                             "flags=[ USER_SENSITIVE_WHEN_GRANTED|USER_SENSITIVE_WHEN_DENIED]")
        io.out("\n".join(lines) + "\n")
        return 0

    # -- am (AOSP ActivityManagerShellCommand.java) ----------------------------------------
    async def am(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2:
            io.err("Activity manager (activity) commands:\n  help\n")
            return 255
        verb, args = argv[1], argv[2:]
        if verb == "force-stop":
            if args:
                self.device.force_stop(args[-1])
            return 0
        if verb not in ("start", "start-activity", "startservice", "start-service",
                        "start-foreground-service", "startforegroundservice"):
            io.err(f"Unknown command: {verb}\n")
            return 255
        action = data = component = None
        extras = False
        i = 0
        while i < len(args):
            a = args[i]
            if a == "-a" and i + 1 < len(args):
                action, i = args[i + 1], i + 2
            elif a == "-d" and i + 1 < len(args):
                data, i = args[i + 1], i + 2
            elif a == "-n" and i + 1 < len(args):
                component, i = args[i + 1], i + 2
            elif a in ("--es", "--ei", "--ez", "--el", "--esa", "--eu") and i + 2 < len(args):
                extras, i = True, i + 3
            elif a in ("-W", "-S", "--user") or a.startswith("-"):
                i += 2 if a == "--user" else 1
            else:
                i += 1
        pkg, cls = None, None
        if component:
            pkg, _, cls = component.partition("/")
            if cls.startswith("."):
                cls = pkg + cls
        shown = component if component else None
        text = intent_text(action, data, shown, extras)
        if verb in ("start", "start-activity"):
            io.out(f"Starting: {text}\n")
            if action == "android.intent.action.CALL" and data and data.startswith("tel:"):
                # The shell holds CALL_PHONE (packages/Shell/AndroidManifest.xml): the call is placed.
                self.device.place_call(data[4:])
                return 0
            if pkg is None:
                io.err("Error: Activity not started, unable to resolve " + text + "\n")
                return 1
            error = self.device.start_activity(pkg, cls or "", action, data)
            if error:
                io.err(error + "\n")
                return 1
            return 0
        io.out(f"Starting service: {text}\n")
        if pkg is None:
            io.err("Error: Not found; no service started.\n")
            return 255
        error = self.device.start_service(pkg, cls or "", foreground="foreground" in verb)
        if error:
            io.err(error + "\n")
            return 255
        return 0

    async def monkey(self, argv: list[str], io: Io) -> int:
        # `monkey -p PKG -c android.intent.category.LAUNCHER 1` starts an app's launcher activity.
        if "-p" not in argv:
            io.err("** No activities found to run, monkey aborted.\n")
            return 251
        pkg = argv[argv.index("-p") + 1]
        if pkg not in self.state.packages:
            io.err("** No activities found to run, monkey aborted.\n")
            return 251
        self.device.start_activity(pkg, "", "android.intent.action.MAIN", None)
        io.out("  bash arg: -p\n  bash arg: " + pkg + "\nEvents injected: 1\n")
        return 0

    async def run_as(self, argv: list[str], io: Io) -> int:
        # AOSP system/core/run-as/run-as.cpp: only debuggable packages; release apps refuse.
        if len(argv) < 2:
            io.err("usage: run-as <package-name> [--user <uid>] <command> [<args>]\n")
            return 1
        if argv[1] not in self.state.packages:
            io.err(f"run-as: unknown package: {argv[1]}\n")
            return 1
        io.err(f"run-as: package not debuggable: {argv[1]}\n")
        return 1

    # -- content (AOSP cmds/content/src/com/android/commands/content/Content.java) -------------
    async def content(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2 or argv[1] != "query":
            io.err("usage: adb shell content [subcommand] [options]\n")
            return 1 if len(argv) < 2 else 0
        opts: dict[str, str] = {}
        i = 2
        while i < len(argv):
            if argv[i] in ("--uri", "--projection", "--where", "--sort", "--user") and i + 1 < len(argv):
                opts[argv[i][2:]] = argv[i + 1]
                i += 2
            else:
                io.err(f"Error: Unknown argument: {argv[i]}\n")
                return 1
        uri = opts.get("uri")
        if not uri:
            io.err("Error: Content provider URI not specified\n")
            return 1
        m = re.match(r"content://([^/]+)(/.*)?$", uri)
        if not m:
            io.err(f"Error while accessing provider:{uri}\njava.lang.IllegalArgumentException: "
                   f"Invalid URI: {uri}\n")
            return 0
        authority, path = m.group(1), (m.group(2) or "").strip("/")
        table = self._provider(authority, path)
        if table is None:
            io.err(f"Error while accessing provider:{authority}\njava.lang.IllegalStateException: "
                   f"Could not find provider: {authority}\n\tat com.android.commands.content."
                   "Content$Command.execute(Content.java)\n")
            return 0
        columns, rows, fixed_where = table
        projection = opts["projection"].split(":") if "projection" in opts else list(columns)
        try:
            out = _query(columns, rows, projection, opts.get("where"), fixed_where, opts.get("sort"))
        except sqlite3.Error as exc:
            io.err(f"Error while accessing provider:{authority}\nandroid.database.sqlite."
                   f"SQLiteException: {exc} (code 1 SQLITE_ERROR)\n")
            return 0
        if not out:
            io.out("No result found.\n")
            return 0
        for n, row in enumerate(out):
            io.out(f"Row: {n} " + ", ".join(f"{k}={_cell(v)}" for k, v in row) + "\n")
        return 0

    def _provider(self, authority: str, path: str
                  ) -> tuple[tuple[str, ...], list[dict[str, Any]], str | None] | None:
        # Telephony.Sms URIs (SmsProvider.java): content://sms, /inbox /sent /draft /outbox
        # /failed /queued, /N; CallLog.Calls: content://call_log/calls.
        with self.state.lock:
            if authority == "sms":
                boxes = {"": None, "inbox": "type=1", "sent": "type=2", "draft": "type=3",
                         "outbox": "type=4", "failed": "type=5", "queued": "type=6"}
                if path in boxes:
                    return SMS_COLUMNS, [dict(r) for r in self.state.sms], boxes[path]
                if path.isdigit():
                    return SMS_COLUMNS, [dict(r) for r in self.state.sms], f"_id={int(path)}"
                return None
            if authority == "call_log" and path in ("calls", ""):
                return CALL_COLUMNS, [dict(r) for r in self.state.calls], None
        return None

    # -- settings (AOSP SettingsService / SettingsProvider) ---------------------------------
    async def settings(self, argv: list[str], io: Io) -> int:
        args = [a for a in argv[1:] if a not in ("--user", "current", "0")]
        if len(args) < 2:
            io.err("Settings provider (settings) commands:\n  help\n")
            return 255
        verb, ns = args[0], args[1]
        if ns not in self.state.settings:
            io.err(f"Invalid namespace '{ns}'\n")  # SettingsService: unknown table
            return 255
        table = self.state.settings[ns]
        if verb == "get" and len(args) >= 3:
            io.out(f"{table.get(args[2], 'null')}\n")
        elif verb == "put" and len(args) >= 4:
            table[args[2]] = args[3]
            self.state.save()
        elif verb == "delete" and len(args) >= 3:
            io.out(f"Deleted {1 if table.pop(args[2], None) is not None else 0} rows\n")
            self.state.save()
        elif verb == "list":
            io.out("".join(f"{k}={v}\n" for k, v in sorted(table.items())))
        else:
            io.err("Settings provider (settings) commands:\n  help\n")
            return 255
        return 0

    # -- device_config (AOSP DeviceConfigService.java) ---------------------------------------
    async def device_config(self, argv: list[str], io: Io) -> int:
        args = argv[1:]
        if not args:
            io.err("Device Config (device_config) commands:\n  help\n")
            return 255
        verb = args[0]
        cfg = self.state.device_config
        if verb == "get" and len(args) == 3:
            io.out(f"{cfg.get(args[1], {}).get(args[2], 'null')}\n")
        elif verb == "put" and len(args) >= 4:
            cfg.setdefault(args[1], {})[args[2]] = args[3]
            self.state.save()
        elif verb == "delete" and len(args) == 3:
            io.out("Successfully deleted\n" if cfg.get(args[1], {}).pop(args[2], None) is not None
                   else "Failed to delete\n")
            self.state.save()
        elif verb == "list":
            for ns, keys in sorted(cfg.items()):
                if len(args) > 1 and ns != args[1]:
                    continue
                io.out("".join(f"{k}={v}\n" if len(args) > 1 else f"{ns}/{k}={v}\n"
                               for k, v in sorted(keys.items())))
        elif verb == "set_sync_disabled_for_tests" and len(args) == 2:
            cfg.setdefault("__sync__", {})["disabled"] = args[1]
            self.state.save()
        elif verb == "get_sync_disabled_for_tests":
            io.out(cfg.get("__sync__", {}).get("disabled", "none") + "\n")
        else:
            io.err("Device Config (device_config) commands:\n  help\n")
            return 255
        return 0

    # -- dumpsys ----------------------------------------------------------------------------
    async def dumpsys(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2:
            io.out("Currently running services:\n  activity\n  deviceidle\n  package\n")
            return 0
        service, args = argv[1], argv[2:]
        if service == "package":
            return await self._dump_package(args[0] if args else "", io)
        if service == "deviceidle":
            return await self._deviceidle(args, io)
        if service == "activity" and args[:1] == ["services"]:
            pkg = args[1] if len(args) > 1 else ""
            io.out("ACTIVITY MANAGER SERVICES (dumpsys activity services)\n")
            for svc in self.device.running_services(pkg):
                io.out(f"  * ServiceRecord{{1a2b3c u0 {svc}}}\n")
            return 0
        if service == "battery":
            io.out("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
                   "  status: 2\n  health: 2\n  present: true\n  level: 81\n  scale: 100\n")
            return 0
        io.err(f"Can't find service: {service}\n")
        return 0

    async def _deviceidle(self, args: list[str], io: Io) -> int:
        # DeviceIdleController.Shell: `whitelist +PKG` / `-PKG`, and the list as "user,PKG,UID".
        if args[:1] != ["whitelist"]:
            io.out("Device idle controller (deviceidle) commands:\n  whitelist\n")
            return 0
        wl = self.state.deviceidle_whitelist
        if len(args) == 1:
            for name in sorted(wl):
                pkg = self._pkg(name)
                io.out(f"user,{name},{pkg.uid if pkg else 0}\n")
            return 0
        for item in args[1:]:
            op, name = item[:1], item[1:]
            if op == "+":
                if name not in self.state.packages:
                    io.out(f"Unknown package: {name}\n")
                    continue
                wl.add(name)
                io.out(f"Added: {name}\n")
            elif op == "-":
                wl.discard(name)
                io.out(f"Removed: {name}\n")
            else:
                io.out(f"Package must be prefixed with +, -, or =: {item}\n")
                return -1
        self.state.save()
        return 0

    async def _appops(self, args: list[str], io: Io) -> int:
        ops = self.state.app_data.setdefault("appops", {})
        if args[:1] == ["set"] and len(args) >= 4:
            if args[1] not in self.state.packages:
                io.err(f"Error: Unknown package: {args[1]}\n")  # AppOpsService.Shell
                return -1
            ops.setdefault(args[1], {})[args[2]] = args[3]
            self.state.save()
            return 0
        if args[:1] == ["get"] and len(args) >= 2:
            for op, mode in sorted(ops.get(args[1], {}).items()):
                if len(args) > 2 and op != args[2]:
                    continue
                io.out(f"{op}: {mode}\n")
            if not ops.get(args[1]):
                io.out("No operations.\n")
            return 0
        io.err("AppOps service (appops) commands:\n  help\n")
        return -1

    # -- input (AOSP InputShellCommand.java) -----------------------------------------------------
    async def input(self, argv: list[str], io: Io) -> int:
        if len(argv) < 2 or argv[1] not in ("text", "keyevent", "tap", "swipe", "press"):
            io.err("Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]\n")
            return 1
        self.input_log.append(argv[1:])
        return 0


def _cell(value: Any) -> str:
    # QueryCommand: NULL for null, longs and strings as they are.
    return "NULL" if value is None else str(value)


def _query(columns: tuple[str, ...], rows: list[dict[str, Any]], projection: list[str],
           where: str | None, fixed_where: str | None, sort: str | None) -> list[list[tuple[str, Any]]]:
    """The provider's SQL, run by SQLite as SmsProvider / CallLogProvider run theirs."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute(f"CREATE TABLE t ({', '.join(columns)})")
        db.executemany(f"INSERT INTO t VALUES ({', '.join('?' for _ in columns)})",
                       [tuple(r.get(c) for c in columns) for r in rows])
        clauses = [c for c in (fixed_where, where) if c]
        sql = f"SELECT {', '.join(projection)} FROM t"
        if clauses:
            sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
        # SmsProvider's default order is "date DESC"; CallLogProvider's too.
        sql += f" ORDER BY {sort}" if sort else " ORDER BY date DESC"
        cur = db.execute(sql)
        names = [d[0] for d in cur.description]
        return [list(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        db.close()


CommandFactory = Callable[[Device], Commands]
