"""libcurl's multi interface driven by the asyncio loop, lean.

:class:`CurlLoop` runs :class:`pycurl.Curl` transfers on one
:class:`pycurl.CurlMulti` with libcurl's multi-socket API
(https://curl.se/libcurl/c/libcurl-multi.html, "multi_socket"): libcurl tells
us which sockets to watch (``CURLMOPT_SOCKETFUNCTION``) and when to call it
back (``CURLMOPT_TIMERFUNCTION``); we call ``curl_multi_socket_action`` when
one is ready or the time has come, then collect finished transfers with
``curl_multi_info_read``.

What it costs per request is most of what a webhook costs, so:

- The sockets are watched on an epoll set of our own, whose one descriptor the
  loop watches (``loop.add_reader``): libcurl asks to watch and drop a socket at
  every request, and doing that through the loop's selector costs several times
  the request itself. pycurl's own ``AsyncCurlMulti`` goes through the loop's
  selector; it measured at about twice the CPU per request here.
- A kept-alive connection that libcurl stops watching between two requests
  stays in the set, marked idle: when the next request on it asks for the same
  events, nothing is done. If an idle one turns ready (the server closed it),
  it is dropped from the set then.
- A finished transfer is handed to its callback (:meth:`CurlLoop.start`);
  :meth:`CurlLoop.perform` wraps that in a future for ``await``.
- libcurl moves its timer at nearly every call; the loop's timer is moved only
  when libcurl wants to be called earlier than it will be (being called
  early is harmless: libcurl just looks at its clocks), and all the
  transfers added in one pass of the loop are started by one call — at the
  end of the same pass when they were added by the callbacks of transfers
  that just finished.

Linux only (epoll), as the daemon is.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import Callable

import pycurl

_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_IDLE = -1  # in the set, but libcurl no longer asks for it
_READY_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP

Done = Callable[[pycurl.Curl, "pycurl.error | None"], None]


class CurlLoop:
    """Transfers on one multi handle, run from the running loop."""

    def __init__(self, *, max_connections: int) -> None:
        self._loop = self.loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._masks: dict[int, int] = {}  # fd -> events it is registered for (or _IDLE)
        self._running: dict[pycurl.Curl, Done] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # when libcurl wants to be called (loop time)
        self._kick: asyncio.Handle | None = None  # "call libcurl soon", once per pass of the loop
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAXCONNECTS, max_connections)  # idle connections kept for reuse
        self._multi: pycurl.CurlMulti | None = multi
        self._loop.add_reader(self._epoll.fileno(), self._on_ready)

    def start(self, curl: pycurl.Curl, done: Done) -> None:
        """Start ``curl``'s transfer; ``done(curl, None)`` once it has finished,
        ``done(curl, error)`` if it failed, always from the loop, never from
        inside this call. Not called if the transfer is cancelled or the loop
        closed first."""
        multi = self._multi
        if multi is None:
            raise RuntimeError("the curl loop is closed")
        self._running[curl] = done
        multi.add_handle(curl)  # libcurl asks for a call back at once (timer 0): transfers start in a batch

    def cancel(self, curl: pycurl.Curl) -> bool:
        """Stop ``curl``'s transfer (its callback is not called); False if it was not running."""
        if self._running.pop(curl, None) is None:
            return False
        if self._multi is not None:
            self._multi.remove_handle(curl)
        return True

    async def perform(self, curl: pycurl.Curl) -> None:
        """Run ``curl``'s transfer; pycurl.error if it failed."""
        future: asyncio.Future[None] = self._loop.create_future()
        self.start(curl, lambda _curl, error: _resolve(future, error))
        try:
            await future
        except asyncio.CancelledError:
            self.cancel(curl)
            raise

    def close(self) -> None:
        """Stop every transfer (their callbacks are not called) and close the connections."""
        multi, self._multi = self._multi, None
        if multi is None:
            return
        for handle in (self._timer, self._kick):
            if handle is not None:
                handle.cancel()
        self._timer = self._kick = None
        running, self._running = self._running, {}
        for curl in running:
            multi.remove_handle(curl)
        self._loop.remove_reader(self._epoll.fileno())
        multi.close()  # closes the cached connections (their sockets leave the epoll set as they close)
        self._epoll.close()
        self._masks.clear()

    # -- libcurl's callbacks --------------------------------------------------------

    def _on_socket(self, what: int, fd: int, multi: object, socketp: object) -> None:
        masks = self._masks
        if what == pycurl.POLL_REMOVE or what == pycurl.POLL_NONE:
            if fd in masks:
                masks[fd] = _IDLE  # left in the set: the next request on this connection wants it again
            return
        mask = (_IN if what & pycurl.POLL_IN else 0) | (_OUT if what & pycurl.POLL_OUT else 0)
        was = masks.get(fd)
        if was == mask:
            return
        if was is None:
            self._register(fd, mask)
            return
        # Idle, or watched for other events. An idle number may also have been
        # closed (epoll dropped it) and reused by a new connection: modify tells.
        try:
            self._epoll.modify(fd, mask)
        except FileNotFoundError:
            self._register(fd, mask)
            return
        masks[fd] = mask

    def _register(self, fd: int, mask: int) -> None:
        try:
            self._epoll.register(fd, mask)
        except FileExistsError:
            self._epoll.modify(fd, mask)
        self._masks[fd] = mask

    def _on_timer(self, timeout_ms: int) -> None:
        if timeout_ms < 0:
            self._timer_at = None  # no timer wanted; a pending one fires harmlessly
            return
        if timeout_ms == 0:
            self._timer_at = None
            if self._kick is None:
                self._kick = self._loop.call_soon(self._on_kick)  # not from inside libcurl: no re-entry
            return
        at = self._loop.time() + timeout_ms / 1000
        self._timer_at = at
        timer = self._timer
        if timer is not None:
            if timer.when() <= at:
                return  # it fires first; then it looks again
            timer.cancel()
        self._timer = self._loop.call_at(at, self._on_timeout)

    # -- the loop's callbacks -------------------------------------------------------

    def _on_kick(self) -> None:
        self._kick = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()

    def _on_timeout(self) -> None:
        self._timer = None
        at = self._timer_at
        if at is None:
            return
        if at > self._loop.time():
            self._timer = self._loop.call_at(at, self._on_timeout)
            return
        self._timer_at = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()

    def _on_ready(self) -> None:
        masks = self._masks
        for fd, events in self._epoll.poll(0):
            if masks.get(fd) == _IDLE:  # a kept-alive connection closed by its server: libcurl finds out at reuse
                del masks[fd]
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
                continue
            flags = 0
            if events & _READY_IN:
                flags |= pycurl.CSELECT_IN
            if events & select.EPOLLOUT:
                flags |= pycurl.CSELECT_OUT
            if events & select.EPOLLERR:
                flags |= pycurl.CSELECT_ERR
            self._act(fd, flags)
        self._collect()
        kick = self._kick
        if kick is not None:  # transfers added by the callbacks just run: start them now, not a pass later
            kick.cancel()
            self._on_kick()

    def _act(self, fd: int, flags: int) -> None:
        multi = self._multi
        if multi is None:
            return
        try:
            multi.socket_action(fd, flags)
        except pycurl.error as exc:  # the multi handle itself failed: every transfer with it
            running, self._running = self._running, {}
            for curl, done in running.items():
                multi.remove_handle(curl)
                self._loop.call_soon(done, curl, exc)

    def _collect(self) -> None:
        multi = self._multi
        if multi is None:
            return
        running = self._running
        while True:
            queued, ok, failed = multi.info_read()
            for curl in ok:
                done = running.pop(curl, None)
                if done is not None:
                    multi.remove_handle(curl)
                    done(curl, None)
            for curl, code, message in failed:
                done = running.pop(curl, None)
                if done is not None:
                    multi.remove_handle(curl)
                    done(curl, pycurl.error(code, message))
            if not queued:
                return


def _resolve(future: asyncio.Future[None], error: pycurl.error | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
