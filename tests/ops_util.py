"""Helpers of the operations tests (tests/test_ops_*.py): config files on
free loopback ports, the real `simbridge` command in a subprocess, a self-signed
certificate, a websocket agent that speaks just enough of the protocol."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import websockets
from conftest import timeout

from device_agents import protocol as p

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, *, devices: str | None = None, extra: str = "", api_extra: str = "",
                 agents_extra: str = "", name: str = "config.toml") -> tuple[Path, int, int]:
    api, agents = free_port(), free_port()
    if devices is None:
        devices = """
[[devices]]
id = "sim-1"
kind = "virtual"
account = "user@email.com"
max_per_minute = 0
latency = 0.0
delivery_delay = 0.0
"""
    path = tmp_path / name
    path.write_text(f"""
[api]
listen = "127.0.0.1:{api}"
timezone = "Europe/Paris"
{api_extra}
[agents]
listen = "127.0.0.1:{agents}"
lease_s = 30
requeue_grace_s = 60
{agents_extra}
[store]
path = "{(tmp_path / 'data' / 'simbridge.db').as_posix()}"
synchronous = "normal"

[[accounts]]
login = "user@email.com"
access_key = "your-access-key"
{extra}
{devices}
""")
    return path, api, agents


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def simbridge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge.cli", *args]


async def cli(*args: str, env: dict[str, str] | None = None, within: float = 30) -> tuple[int, str, str]:
    """Run `simbridge ARGS` without blocking the event loop (an in-process daemon may be running)."""
    proc = await asyncio.create_subprocess_exec(*simbridge_cmd(*args), stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, env=env or cli_env(), cwd=ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), timeout(within))
    return proc.returncode, out.decode(), err.decode()


def self_signed(tmp_path: Path, name: str = "agents", cn: str = "simbridge.test") -> tuple[Path, Path]:
    """A self-signed certificate and its key (openssl, as an operator would make one)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class RawAgent:
    """A websocket agent of the test's own: hello, then whatever the test does."""

    def __init__(self, url: str, device_id: str, token: str, ssl: Any = None) -> None:
        self.url, self.device_id, self.token, self.ssl = url, device_id, token, ssl
        self.ws: Any = None

    async def connect(self) -> Any:
        self.ws = await websockets.connect(self.url, ssl=self.ssl, open_timeout=timeout(10))
        return self.ws

    async def hello(self) -> p.Message:
        challenge = p.decode(await asyncio.wait_for(self.ws.recv(), timeout(10)))
        assert isinstance(challenge, p.Challenge)
        await self.ws.send(p.encode(p.answer(challenge, device_id=self.device_id, token=self.token, agent="test/1")))
        return p.decode(await asyncio.wait_for(self.ws.recv(), timeout(10)))

    async def closed_code(self) -> int | None:
        """Wait for the bridge to close the session; its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout(10))
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
