"""``adb shell`` on the virtual phone: the shell user's command line.

The line is split the way mksh would for what the bridge sends (``;``,
``&&``, ``||``, ``|``, ``>``/``2>``/``2>&1`` redirections, quotes, ``$?``);
each command is a function of :mod:`.commands`, run as the shell user (uid
2000). A command not on the shell's PATH answers as Android's mksh does:
``/system/bin/sh: NAME: inaccessible or not found`` on stderr, exit 127
(AOSP external/mksh ``exec.c``; the same text for a path the shell user may
not enter, e.g. ``/data/data/com.termux/files/usr/bin/…``).
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .services import ShellResult


@dataclass
class Io:
    stdin: bytes = b""
    stdout: bytes = b""
    stderr: bytes = b""
    merged: bytes = b""  # both, in the order written (what a v1 shell stream carries)

    def out(self, text: str) -> None:
        self.stdout += text.encode()
        self.merged += text.encode()

    def err(self, text: str) -> None:
        self.stderr += text.encode()
        self.merged += text.encode()


Command = Callable[[list[str], Io], Awaitable[int]]


class PhoneShell:
    """Runs command lines with a table of commands (name -> coroutine)."""

    def __init__(self, commands: dict[str, Command]) -> None:
        self.commands = commands
        self.history: list[str] = []

    async def run(self, command: str, *, stdin: bytes = b"") -> ShellResult:
        self.history.append(command)
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            return ShellResult(stderr=f"/system/bin/sh: syntax error: {exc}\n".encode(), exit=1)
        # shlex makes '2>&1' into '2', '>&', '1' and '>/dev/null' into '>', '/dev/null'.
        pipelines: list[tuple[str, list[list[str]]]] = []
        current: list[list[str]] = [[]]
        joiner = ";"
        for tok in tokens:
            if tok in (";", "&&", "||", "&"):
                pipelines.append((joiner, current))
                current = [[]]
                joiner = ";" if tok == "&" else tok
            elif tok == "|":
                current.append([])
            else:
                current[-1].append(tok)
        pipelines.append((joiner, current))
        out = Io()
        status = 0
        for join, pipeline in pipelines:
            if not any(pipeline):
                continue
            if (join == "&&" and status != 0) or (join == "||" and status == 0):
                continue
            data = stdin
            for i, argv in enumerate(pipeline):
                argv = [str(status) if a == "$?" else a.replace("$?", str(status)) for a in argv]
                argv, to_null, err_to_out, err_null, out_to_err = _redirections(argv)
                io = Io(stdin=data)
                status = await self._one(argv, io)
                if out_to_err:
                    io.stderr += io.stdout
                    io.stdout = b""
                last = i == len(pipeline) - 1
                plain = not (err_to_out or err_null or to_null or out_to_err)
                if err_to_out:
                    io.stdout = io.merged if not to_null else b""
                    io.stderr = b""
                if err_null:
                    io.stderr = b""
                if to_null and not err_to_out:
                    io.stdout = b""
                out.stderr += io.stderr
                if last:
                    out.stdout += io.stdout
                    out.merged += io.merged if plain else io.stdout + io.stderr
                else:
                    out.merged += io.stderr
                data = io.stdout
            if status == -999:  # 'exit'
                return ShellResult(out.stdout, out.stderr, self._exit_code, out.merged)
        return ShellResult(out.stdout, out.stderr, status & 0xFF, out.merged)

    _exit_code = 0

    async def _one(self, argv: list[str], io: Io) -> int:
        if not argv:
            return 0
        name = argv[0]
        if name == "exit":
            self._exit_code = int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else 0
            return -999
        base = name.rsplit("/", 1)[-1] if name.startswith(("/system/bin/", "/system/xbin/")) else name
        handler = self.commands.get(base)
        if handler is None:
            io.err(f"/system/bin/sh: {name}: inaccessible or not found\n")
            return 127
        return await handler(argv, io)


def _redirections(argv: list[str]) -> tuple[list[str], bool, bool, bool, bool]:
    out: list[str] = []
    to_null = err_to_out = err_null = out_to_err = False
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        after = argv[i + 2] if i + 2 < len(argv) else ""
        if a == "2" and nxt == ">&" and after == "1":
            err_to_out = True
            i += 3
            continue
        if a == ">&" and nxt == "2":
            out_to_err = True
            i += 2
            continue
        if a == "1" and nxt == ">&" and after == "2":
            out_to_err = True
            i += 3
            continue
        if a == "2" and nxt == ">":
            err_null = after == "/dev/null"
            i += 3
            continue
        if a in (">", ">>"):
            to_null = True  # the shell user writes no files this way here; output is dropped
            i += 2
            continue
        out.append(a)
        i += 1
    return out, to_null, err_to_out, err_null, out_to_err
