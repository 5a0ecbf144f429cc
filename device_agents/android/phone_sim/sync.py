"""adbd's file sync service (``adb push`` / ``adb pull`` / ``adb ls``).

Sources (AOSP packages/modules/adb): ``SYNC.TXT`` and
``daemon/file_sync_service.cpp``. Each request is a 4-byte id, a u32
little-endian length and a path (at most 1024 bytes). ``STAT`` answers
``STAT mode size mtime`` (all zero when the path does not exist); ``LIST``
answers ``DENT mode size time namelen name`` entries then ``DONE``; ``SEND``
takes ``path,mode`` then ``DATA`` chunks (at most 64 KiB each) and ``DONE
mtime``, answered ``OKAY`` or ``FAIL len message``; ``RECV`` answers ``DATA``
chunks then ``DONE``, or ``FAIL``; ``QUIT`` ends the service.

The files the shell user may write are its own: ``/sdcard`` (= ``/storage/
emulated/0``) and ``/data/local/tmp``; an app's private ``/data/data/PKG`` is
neither readable nor writable by it (Android's per-app UIDs; the shell user is
uid 2000, AOSP ``system/core/libcutils/include/private/android_filesystem_config.h``).
"""

from __future__ import annotations

import os
import stat
import struct
import time
from pathlib import Path

from .transport import Stream

SYNC_DATA_MAX = 64 * 1024
MAX_PATH = 1024
_REQ = struct.Struct("<4sI")
_STAT = struct.Struct("<4sIII")
_DENT = struct.Struct("<4sIIII")

SHELL_WRITABLE = ("/sdcard", "/storage/emulated/0", "/data/local/tmp")
SHELL_READABLE = SHELL_WRITABLE + ("/system", "/vendor", "/proc", "/etc")


class PhoneFiles:
    """The phone's file tree, kept under ``root`` on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for top in ("sdcard", "data/local/tmp", "system/bin"):
            (root / top).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def normalise(path: str) -> str:
        path = os.path.normpath("/" + path.lstrip("/"))
        if path == "/storage/emulated/0" or path.startswith("/storage/emulated/0/"):
            path = "/sdcard" + path[len("/storage/emulated/0"):]
        return path

    def local(self, path: str) -> Path:
        return self.root / self.normalise(path).lstrip("/")

    @staticmethod
    def _under(path: str, tops: tuple[str, ...]) -> bool:
        return any(path == t or path.startswith(t + "/") for t in tops) or path == "/"

    def may_read(self, path: str) -> bool:
        return self._under(self.normalise(path), SHELL_READABLE)

    def may_write(self, path: str) -> bool:
        p = self.normalise(path)
        return p != "/" and self._under(p, SHELL_WRITABLE)


class SyncService:
    def __init__(self, files: PhoneFiles) -> None:
        self.files = files

    async def serve(self, stream: Stream) -> None:
        while True:
            ident, length = _REQ.unpack(await stream.read_exactly(_REQ.size))
            if length > MAX_PATH and ident in (b"STAT", b"LIST", b"SEND", b"RECV"):
                await stream.write(self._fail("path too long"))
                return
            path = (await stream.read_exactly(length)).decode("utf-8", "replace") if length else ""
            if ident == b"STAT":
                await stream.write(self._stat(path))
            elif ident == b"LIST":
                await stream.write(self._list(path))
            elif ident == b"SEND":
                await self._send(stream, path)
            elif ident == b"RECV":
                await self._recv(stream, path)
            elif ident == b"QUIT":
                return
            else:
                await stream.write(self._fail(f"unknown command {ident!r}"))
                return

    @staticmethod
    def _fail(message: str) -> bytes:
        data = message.encode()
        return _REQ.pack(b"FAIL", len(data)) + data

    def _stat(self, path: str) -> bytes:
        local = self.files.local(path)
        if not self.files.may_read(path) or not local.exists():
            return _STAT.pack(b"STAT", 0, 0, 0)
        st = local.stat()
        return _STAT.pack(b"STAT", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime))

    def _list(self, path: str) -> bytes:
        local = self.files.local(path)
        out = b""
        if self.files.may_read(path) and local.is_dir():
            for entry in sorted(local.iterdir()):
                st = entry.stat()
                name = entry.name.encode()
                out += _DENT.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime),
                                  len(name)) + name
        return out + _DENT.pack(b"DONE", 0, 0, 0, 0)

    async def _send(self, stream: Stream, spec: str) -> None:
        path, _, mode_text = spec.rpartition(",")
        if not path:
            path, mode_text = spec, "33188"
        try:
            mode = int(mode_text)
        except ValueError:
            mode = 0o100644
        error = None
        if not self.files.may_write(path):
            error = "couldn't create file: Permission denied"
        local = self.files.local(path)
        chunks: list[bytes] = []
        mtime = int(time.time())
        while True:
            ident, length = _REQ.unpack(await stream.read_exactly(_REQ.size))
            if ident == b"DATA":
                if length > SYNC_DATA_MAX:
                    await stream.write(self._fail("data chunk over 64 KiB"))
                    return
                chunks.append(await stream.read_exactly(length))
            elif ident == b"DONE":
                mtime = length
                break
            else:
                await stream.write(self._fail(f"unexpected {ident!r} in SEND"))
                return
        if error is None and local.is_dir():
            error = "couldn't create file: Is a directory"
        if error is not None:
            await stream.write(self._fail(error))
            return
        # file_sync_service.cpp: parent directories are made (the fixed_push_mkdir feature).
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".adbsync")
        tmp.write_bytes(b"".join(chunks))
        os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
        os.replace(tmp, local)
        os.utime(local, (mtime, mtime))
        await stream.write(_REQ.pack(b"OKAY", 0))

    async def _recv(self, stream: Stream, path: str) -> None:
        local = self.files.local(path)
        if not self.files.may_read(path):
            await stream.write(self._fail("open failed: Permission denied"))
            return
        if not local.is_file():
            await stream.write(self._fail("open failed: No such file or directory"))
            return
        data = local.read_bytes()
        out = b""
        for start in range(0, len(data), SYNC_DATA_MAX):
            chunk = data[start:start + SYNC_DATA_MAX]
            out += _REQ.pack(b"DATA", len(chunk)) + chunk
        await stream.write(out + _REQ.pack(b"DONE", 0))
