"""libcurl's multi interface driven by the asyncio loop, lean.

:class:`CurlLoop` runs :class:`pycurl.Curl` transfers on one
:class:`pycurl.CurlMulti` with libcurl's multi-socket API
(https://curl.se/libcurl/c/libcurl-multi.html, "multi_socket"): libcurl tells
us which sockets to watch (``CURLMOPT_SOCKETFUNCTION``) and when to call it
back (``CURLMOPT_TIMERFUNCTION``); we call ``curl_multi_socket_action`` when
one is ready or the time has come, then collect finished transfers with
``curl_multi_info_read``.

The sockets are watched on an epoll set of our own, whose one descriptor the
loop watches (``loop.add_reader``): libcurl adds and drops a socket at every
request, and doing that through the loop's selector costs several times the
request itself. pycurl's own ``AsyncCurlMulti`` goes through the loop's
selector; it measured at about twice the CPU per request here.

Linux only (epoll), as the daemon is.
"""

from __future__ import annotations

import asyncio
import contextlib
import select

import pycurl

_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT


class CurlLoop:
    """Transfers on one multi handle, awaited from the running loop."""

    def __init__(self, *, max_connections: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._watched: set[int] = set()
        self._waiting: dict[pycurl.Curl, asyncio.Future[None]] = {}
        self._timer: asyncio.Handle | None = None
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAXCONNECTS, max_connections)  # idle connections kept for reuse
        self._multi: pycurl.CurlMulti | None = multi
        self._loop.add_reader(self._epoll.fileno(), self._on_ready)

    async def perform(self, curl: pycurl.Curl) -> None:
        """Run ``curl``'s transfer; pycurl.error if it failed."""
        multi = self._multi
        if multi is None:
            raise RuntimeError("the curl loop is closed")
        future = self._loop.create_future()
        self._waiting[curl] = future
        multi.add_handle(curl)  # libcurl asks for a call back at once (timer 0): transfers start in a batch
        try:
            await future
        except asyncio.CancelledError:
            if self._waiting.pop(curl, None) is not None:
                multi.remove_handle(curl)
            raise

    def close(self) -> None:
        """Stop every transfer (their awaiters are cancelled) and close the connections."""
        multi, self._multi = self._multi, None
        if multi is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, {}
        for curl, future in waiting.items():
            multi.remove_handle(curl)
            future.cancel()
        self._loop.remove_reader(self._epoll.fileno())
        multi.close()  # closes the cached connections (their sockets leave the epoll set as they close)
        self._epoll.close()
        self._watched.clear()

    # -- libcurl's callbacks --------------------------------------------------------

    def _on_socket(self, what: int, fd: int, multi: object, socketp: object) -> None:
        if what == pycurl.POLL_REMOVE or what == pycurl.POLL_NONE:
            if fd in self._watched:
                self._watched.discard(fd)
                with contextlib.suppress(OSError):  # already closed: epoll dropped it itself
                    self._epoll.unregister(fd)
            return
        mask = (_IN if what & pycurl.POLL_IN else 0) | (_OUT if what & pycurl.POLL_OUT else 0)
        if fd in self._watched:
            try:
                self._epoll.modify(fd, mask)
                return
            except FileNotFoundError:  # the number was closed and reused without a POLL_REMOVE
                pass
        try:
            self._epoll.register(fd, mask)
        except FileExistsError:
            self._epoll.modify(fd, mask)
        self._watched.add(fd)

    def _on_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms == 0:
            self._timer = self._loop.call_soon(self._on_timeout)  # not from inside libcurl: no re-entry
        elif timeout_ms > 0:
            self._timer = self._loop.call_later(timeout_ms / 1000, self._on_timeout)

    # -- the loop's callbacks -------------------------------------------------------

    def _on_timeout(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)
        self._collect()

    def _on_ready(self) -> None:
        for fd, events in self._epoll.poll(0):
            flags = 0
            if events & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP):
                flags |= pycurl.CSELECT_IN
            if events & select.EPOLLOUT:
                flags |= pycurl.CSELECT_OUT
            if events & select.EPOLLERR:
                flags |= pycurl.CSELECT_ERR
            self._act(fd, flags)
        self._collect()

    def _act(self, fd: int, flags: int) -> None:
        multi = self._multi
        if multi is None:
            return
        try:
            multi.socket_action(fd, flags)
        except pycurl.error as exc:  # the multi handle itself failed: every transfer with it
            for curl, future in list(self._waiting.items()):
                del self._waiting[curl]
                multi.remove_handle(curl)
                if not future.done():
                    future.set_exception(exc)

    def _collect(self) -> None:
        multi = self._multi
        if multi is None:
            return
        while True:
            queued, done, failed = multi.info_read()
            for curl in done:
                self._finish(multi, curl, None)
            for curl, code, message in failed:
                self._finish(multi, curl, pycurl.error(code, message))
            if not queued:
                return

    def _finish(self, multi: pycurl.CurlMulti, curl: pycurl.Curl, error: pycurl.error | None) -> None:
        future = self._waiting.pop(curl, None)
        if future is None:
            return
        multi.remove_handle(curl)
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
