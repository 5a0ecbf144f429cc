"""The seeds' own webhook receivers, run for real (Flask from PyPI, PHP's
built-in server, Express from npm), read every byte of what the phone
received: ``%``, ``+``, ``&``, emoji, quotes, backslashes and newlines.

The receivers are in tests/clients/receivers/, as the seeds print them (only
the port changed). The PHP ones do nothing visible with what they decode, so
they run behind a router that requires them unchanged and then writes the
variables they decoded to a file."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from api_util import BEARER, serving
from conftest import api_url, free_port, make_config, timeout, wait_until

RECEIVERS = Path(__file__).parent / "clients" / "receivers"
NODE_MODULES = Path(__file__).parent / "clients" / "node_modules"

TEXT = 'Soldes: 20% off + 2 for 1 & more=yes 100%25 %41 "quoted" back\\slash é 🎉👍🏽\nsecond line\r\nthird'
SENDER = "+33612345678"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Receiver:
    """A receiver process; ``output`` is what it printed so far."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.output = ""
        self._reader: asyncio.Task[None] | None = None

    async def start(self, argv: list[str], port: int, cwd: Path) -> None:
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES), PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        await wait_until(lambda: port_open(port) or self.proc.returncode is not None, within=20,
                         what=f"{argv[0]} listening")
        assert self.proc.returncode is None, f"{argv} exited: {self.output[-2000:]}"

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(4096):
            self.output += chunk.decode(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout(10))
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader


def account(url: str, form: str) -> dict[str, object]:
    return {"login": "user@email.com", "access_key": "your-access-key", "webhook_url": url, "webhook_format": form}


async def incoming(http: aiohttp.ClientSession, daemon, text: str) -> None:
    async with http.post(api_url(daemon, "/api/v1/simulate/incoming-sms"), json={"from": SENDER, "text": text},
                         headers=BEARER) as resp:
        assert resp.status == 200, await resp.text()


def php_router(tmp_path: Path, receiver: str, variables: tuple[str, ...]) -> Path:
    """A router for ``php -S`` that runs the receiver unchanged, then records what it decoded."""
    shutil.copy(RECEIVERS / receiver, tmp_path / receiver)
    names = ", ".join(f"'{v}'" for v in variables)
    router = tmp_path / "router.php"
    router.write_text(f"""<?php
require __DIR__ . '/{receiver}';
foreach ([{names}] as $name) {{
    if (isset($$name)) {{
        file_put_contents(__DIR__ . '/decoded.jsonl', json_encode([$name => $$name], JSON_UNESCAPED_UNICODE) . "\\n",
                          FILE_APPEND);
    }}
}}
""")
    return router


def decoded(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "decoded.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def test_seed_000_flask_receiver_reads_every_byte(tmp_path):
    pytest.importorskip("flask")
    port = free_port()
    script = tmp_path / "app.py"
    script.write_text((RECEIVERS / "seed000_flask.py").read_text().replace("port=3000", f"port={port}"))
    receiver = Receiver()
    await receiver.start([sys.executable, str(script)], port, tmp_path)
    try:
        config = make_config(tmp_path, accounts=[account(f"http://127.0.0.1:{port}/webhook", "insim")])
        async with serving(config) as daemon, aiohttp.ClientSession() as http:
            await incoming(http, daemon, TEXT)
            await incoming(http, daemon, "after")
            await wait_until(lambda: f"SMS from {SENDER}: after" in receiver.output, what="both SMS printed")
        # print() of the decoded text, newline-translated by the terminal-less pipe only at "\r\n".
        assert f"SMS from {SENDER}: {TEXT}" in receiver.output.replace("\r\n", "\n") or \
            f"SMS from {SENDER}: {TEXT}" in receiver.output
    finally:
        await receiver.stop()


async def test_seed_000_express_receiver_reads_every_byte(tmp_path):
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "express").is_dir():
        pytest.skip("node and tests/clients/node_modules (npm ci) are needed")
    port = free_port()
    script = tmp_path / "app.js"
    script.write_text((RECEIVERS / "seed000_express.js").read_text().replace("app.listen(3000)",
                                                                             f"app.listen({port})"))
    receiver = Receiver()
    await receiver.start([node, str(script)], port, tmp_path)
    try:
        config = make_config(tmp_path, accounts=[account(f"http://127.0.0.1:{port}/webhook", "insim")])
        async with serving(config) as daemon, aiohttp.ClientSession() as http:
            await incoming(http, daemon, TEXT)
            await incoming(http, daemon, "after")
            await wait_until(lambda: f"SMS from {SENDER}: after" in receiver.output, what="both SMS printed")
        assert f"SMS from {SENDER}: {TEXT}" in receiver.output
        assert "URIError" not in receiver.output
    finally:
        await receiver.stop()


async def php_receiver(tmp_path: Path, receiver: str, variables: tuple[str, ...], form: str,
                       path: str = "/", calls: int = 0) -> tuple[list[dict[str, object]], Path]:
    php = shutil.which("php")
    if php is None:
        pytest.skip("php-cli is not installed (.ci/run installs it)")
    port = free_port()
    router = php_router(tmp_path, receiver, variables)
    server = Receiver()
    await server.start([php, "-S", f"127.0.0.1:{port}", str(router)], port, tmp_path)
    try:
        config = make_config(tmp_path, accounts=[account(f"http://127.0.0.1:{port}{path}", form)])
        async with serving(config) as daemon, aiohttp.ClientSession() as http:
            await incoming(http, daemon, TEXT)
            for _ in range(calls):
                async with http.post(api_url(daemon, "/api/v1/simulate/call"), headers=BEARER,
                                     json={"from": SENDER, "duration": 323}) as resp:
                    assert resp.status == 200, await resp.text()
            await wait_until(lambda: len(decoded(tmp_path)) == 1 + calls, what="the receiver decoded the events")
    finally:
        await server.stop()
    return decoded(tmp_path), tmp_path


async def test_seed_000_php_receiver_reads_every_byte(tmp_path):
    [row], _ = await php_receiver(tmp_path, "seed000_receiver.php", ("sms", "dlr", "click", "call", "qual"), "insim")
    sms = row["sms"]
    assert sms["message"] == TEXT and sms["from"] == SENDER and sms["title"] == "incoming_sms"


async def test_seed_001_php_receiver_reads_the_ardary_form(tmp_path):
    rows, _ = await php_receiver(tmp_path, "seed001_receiver.php",
                                 ("status_message", "message", "click", "call"), "ardary", calls=1)
    [message] = [r["message"] for r in rows if "message" in r]
    [call] = [r["call"] for r in rows if "call" in r]
    assert call["TITLE"] == "INCOMING CALL" and call["PHONE_NUMBER"] == SENDER and call["DURATION"] == "00:05:23"
    assert call["title"] == "incoming call" and call["phonenumber"] == SENDER
    assert call["CALL_TIME"] == call["call_date"] and len(call["CALL_TIME"]) == 19
    assert message["title"] == "incoming sms" and message["from"] == SENDER
    assert message["message"] == message["body"] == TEXT
    assert len(message["date"]) == 19 and message["date"][4] == "-" and message["date"][13] == ":"


async def test_seed_004_php_receiver_gets_notimation_posts(tmp_path):
    [row], where = await php_receiver(tmp_path, "seed004_receiver.php", ("payload",), "notimation")
    payload = row["payload"]
    assert payload["event"] == "sms_received" and isinstance(payload["sms_id"], int)
    assert payload["data"]["content"] == TEXT and payload["data"]["direction"] == "inbound"
    assert payload["data"]["phone_number"]["international_number"] == SENDER
    assert payload["data"]["status"] == "received"
    log = (where / "webhook.log").read_text()
    assert log == f"Nuevo evento recibido para el mensaje # {payload['sms_id']}\n"
