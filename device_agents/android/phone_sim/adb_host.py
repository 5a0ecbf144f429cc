"""A private instance of the real adb server (Debian's ``adb``), for tests and trials.

It listens on its own port (``adb -P PORT``, never the user's 5037) with its own
``HOME`` (so its own RSA key in ``HOME/.android/adbkey``: a phone that has never
seen it shows ``unauthorized`` until Allow). ``close()`` runs ``adb kill-server``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AdbServer:
    def __init__(self, *, port: int | None = None, home: Path | None = None) -> None:
        self.binary = shutil.which("adb")
        if self.binary is None:
            raise FileNotFoundError("the adb command is not installed (Debian: apt-get install adb)")
        self.port = port or _free_port()
        self._tmp = None
        if home is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="adb-home-")
            home = Path(self._tmp.name)
        self.home = home
        self.env = {**os.environ, "HOME": str(home), "ANDROID_ADB_SERVER_PORT": str(self.port)}
        for var in ("ADB_SERVER_SOCKET", "ANDROID_SERIAL", "ADB_VENDOR_KEYS", "ANDROID_SDK_HOME",
                    "ANDROID_USER_HOME"):
            self.env.pop(var, None)

    def run(self, *args: str, timeout: float = 30, input: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        assert self.binary is not None
        return subprocess.run([self.binary, "-P", str(self.port), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=None if input is None else input.decode(),
                              check=check)

    def start(self) -> AdbServer:
        self.run("start-server", check=True)
        return self

    def state(self, serial: str) -> str:
        """The state ``adb devices`` shows for ``serial`` ("" when absent)."""
        for line in self.run("devices").stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == serial:
                return parts[1]
        return ""

    def wait_state(self, serial: str, wanted: str, *, within: float = 20) -> str:
        deadline = time.monotonic() + within
        seen = ""
        while time.monotonic() < deadline:
            seen = self.state(serial)
            if seen == wanted:
                return seen
            time.sleep(0.05)
        raise TimeoutError(f"{serial} stayed {seen or 'absent'!r}, not {wanted!r}, for {within:g} s")

    def close(self) -> None:
        try:
            self.run("kill-server", timeout=10)
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()

    def __enter__(self) -> AdbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
