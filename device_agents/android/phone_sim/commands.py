"""The commands the shell user finds on the virtual phone, each after its AOSP source.

Only what a gateway bridge runs is here — Android's services (``getprop``,
``pm``, ``am``, ``settings``, ``device_config``, ``dumpsys``, ``cmd``, ``input``,
``monkey``, ``run-as``), ``content`` (:mod:`.content`) and a few toybox tools
(:mod:`.toybox`); anything else is "inaccessible or not found" (see
:mod:`.shell`). Sources are named next to each command.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from .content import ContentCommand
from .packages import PermissionError_, check_grant, stack_trace
from .shell import Command, Io
from .state import Package, PhoneState
from .toybox import Toybox


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
            "am": self.am, "content": ContentCommand(self.state).content, "settings": self.settings,
            "device_config": self.device_config, "dumpsys": self.dumpsys, "input": self.input,
            "monkey": self.monkey, "run-as": self.run_as,
        }
        table.update(Toybox(lambda: table).table())
        return table

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
        # Android 11+ install dirs: /data/app/~~<random>==/<pkg>-<random>==/base.apk (stable per install).
        digest = hashlib.sha256(name.encode()).hexdigest()
        return f"/data/app/~~{digest[:22]}==/{name}-{digest[22:44]}==/base.apk"

    async def _dump_package(self, name: str, io: Io) -> int:
        # The parts of `dumpsys package PKG` a bridge reads (PackageManagerService dump).
        pkg = self._pkg(name)
        if pkg is None:
            io.out(f"Unable to find package: {name}\n")
            return 0
        from .packages import RUNTIME_PERMISSIONS
        lines = ["Packages:", f"  Package [{name}] ({hashlib.sha256(name.encode()).hexdigest()[:7]}):",
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
