"""The small toybox tools the shell user finds in /system/bin (what a bridge pipes through).

Behaviour after AOSP's toybox (external/toybox): ``echo [-n]``, ``true``/``false``,
``id`` (the shell user, uid 2000: android_filesystem_config.h AID_SHELL), ``uname``,
``date [+%s]``, ``which``, ``cat`` (stdin only: the shell user reads no app files),
``ls`` (refused under /data), ``grep [-c -F -i -q -v]``, ``head -n``, ``wc -l``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from .shell import Command, Io


class Toybox:
    def __init__(self, names: Callable[[], dict[str, Command]]) -> None:
        self._names = names  # every command on the PATH, for `which`

    def table(self) -> dict[str, Command]:
        return {"id": self.id_, "echo": self.echo, "true": self.true, "false": self.false,
                "date": self.date, "cat": self.cat, "grep": self.grep, "head": self.head,
                "wc": self.wc, "which": self.which, "uname": self.uname, "ls": self.ls}

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
        table = self._names()
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

