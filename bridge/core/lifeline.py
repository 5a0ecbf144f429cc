"""Children that die with the daemon.

A process the daemon starts (the bulk worker, a local adb server) must not
outlive it, even when the daemon is killed with SIGKILL and has no chance to
stop them. On Linux the kernel does it: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``
in the child asks for SIGKILL when its parent goes (prctl(2)). Two traps,
both handled here:

- the signal comes when the *thread* that forked the child exits, not the
  process: children are started from the event loop's thread (the main
  thread, which lives as long as the process), never from a worker thread;
- the parent may already be gone before the child asks: the child then
  checks that its parent is still the one that started it, and exits if not.

A program that is not Python is started through :func:`guarded_argv`: a
short Python prelude sets the signal and then ``exec``s the program (the
setting survives ``execve``, prctl(2)). Elsewhere than Linux nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Run as ``python -I -S -c PRELUDE <parent pid> <program> <args…>``: standard library only.
PRELUDE = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:\n"
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(0)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def die_with_parent(parent: int) -> bool:
    """In a child: be killed when the parent ``parent`` goes; if it is gone
    already, exit now. False where the system offers no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(0)
    return True


def guarded_argv(argv: list[str]) -> list[str]:
    """``argv`` as started so that it dies with this process (Linux; as it
    is elsewhere). Start it from the event loop's thread."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", PRELUDE, str(os.getpid()), *argv]
