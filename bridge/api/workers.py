"""A second core for the CPU-heavy part of bulk requests, when it pays.

A :class:`SplitPool` built with ``processes=True`` cuts a bulk batch's number
checks in two: one half is done here, the other at the same time in one
worker process. It no longer pays by default: numbers already written in
E.164 are judged from phonenumbers' metadata directly
(``bridge.core.numbers``), and with that, the worker added 0-8 % to bulk
acceptance (within the runs' noise, docs/benchmarks.md) for ~25 MB of RSS and
a process. So by default everything is done here; small batches, or no
worker (could not start, died), are done here too. Only plain values cross:
sending whole judged messages back costs more than it saves (measured).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from bridge.core.lifeline import die_with_parent

log = logging.getLogger(__name__)
T = TypeVar("T")


def _ready() -> bool:
    import phonenumbers  # noqa: F401 - loads the metadata before the first real batch
    return True


class SplitPool:
    PARALLEL_FROM = 200  # items in a batch before half goes to the worker

    def __init__(self, *, processes: bool = False) -> None:
        self.processes = processes  # False: never a worker process (see the module's doc)
        self._enabled = False
        self._pool: ProcessPoolExecutor | None = None
        self._warm: Any = None

    def start(self, *, eager: bool = False) -> None:
        """Allow the worker. ``eager``: start it now (the daemon does); else
        the first bulk batch starts it and is done here while it warms up.
        Without ``processes``, nothing to start."""
        if not self.processes:
            return
        self._enabled = True
        if eager:
            self._usable()

    def close(self) -> None:
        self._enabled = False
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _usable(self) -> bool:
        if self._pool is None:
            try:
                # spawn, not fork: the daemon has threads (SQLite, adb) by now. The worker dies
                # with the daemon, even a daemon killed with SIGKILL (bridge.core.lifeline);
                # it is started here, on the event loop's thread, which lives as long as the daemon.
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=die_with_parent, initargs=(os.getpid(),))
                self._warm = self._pool.submit(_ready)
            except Exception as exc:  # noqa: BLE001 - no worker: everything is done here
                log.warning("bulk requests stay on one core: %s", exc)
                self._enabled = False
                self._pool = None
                return False
        return self._warm.done() and not self._warm.exception()

    async def split(self, fn: Callable[..., list[T]], items: list[Any], *args: Any) -> list[T]:
        """``fn(items, offset, *args)`` over ``items``, half of them in the
        worker. ``fn`` must be a module-level function (it is pickled)."""
        if not self._enabled or len(items) < self.PARALLEL_FROM or not self._usable():
            return fn(items, 0, *args)
        pool = self._pool
        half = len(items) // 2
        theirs = asyncio.get_running_loop().run_in_executor(pool, fn, items[half:], half, *args)
        ours = fn(items[:half], 0, *args)
        try:
            return ours + await theirs
        except BrokenProcessPool:  # the worker died: a new one next time
            log.warning("bulk worker process died; starting another")
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            if self._pool is pool:
                self._pool = None
            return ours + fn(items[half:], half, *args)
