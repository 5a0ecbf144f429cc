"""The phone's test hooks over a Unix socket: one JSON object per line, one answer per line.

Requests (``{"op": …}``): ``allow_usb_debugging`` (``always``: bool), ``deny_usb_debugging``,
``receive_sms`` (``from``, ``text``, ``sim``), ``receive_call`` (``from``, ``answered``,
``duration``), ``unplug``, ``replug``, ``sms_dialog`` (``allow``: bool — the
"… is sending a large number of SMS messages" dialog), ``state``, ``radio_log``,
``screen`` (``app``: what a helper app shows on the phone's screen), ``shell``
(``command``: run as the shell user, for inspection). Answers: ``{"ok": true, …}``
or ``{"ok": false, "error": "…"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .phone import VirtualPhone

log = logging.getLogger(__name__)
MAX_LINE = 1024 * 1024


async def serve_control(phone: VirtualPhone, path: str) -> asyncio.base_events.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("a request is a JSON object")
                    answer = {"ok": True, **(await handle_request(phone, req))}
                except Exception as exc:  # noqa: BLE001 - every bad request gets an answer
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, path, limit=MAX_LINE)


async def handle_request(phone: VirtualPhone, req: dict[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    if op == "allow_usb_debugging":
        return {"answered": phone.allow_usb_debugging(always=bool(req.get("always", True)))}
    if op == "deny_usb_debugging":
        return {"answered": phone.deny_usb_debugging()}
    if op == "receive_sms":
        return {"row": phone.receive_sms(str(req["from"]), str(req["text"]), sub_id=int(req.get("sim", 1)))}
    if op == "receive_call":
        return {"row": phone.receive_call(str(req["from"]), answered=bool(req.get("answered")),
                                          duration=int(req.get("duration", 0)))}
    if op == "unplug":
        await phone.unplug()
        return {}
    if op == "replug":
        await phone.replug()
        return {}
    if op == "sms_dialog":
        return {"answered": phone.sms.answer_dialog(bool(req.get("allow", True)))}
    if op == "state":
        return {"state": phone.state.snapshot(), "pending_keys": list(phone.auth.pending),
                "online": phone.online}
    if op == "radio_log":
        return {"radio_log": phone.state.snapshot()["radio_log"]}
    if op == "screen":
        app = phone.apps.get(str(req.get("app", "")))
        if app is None:
            raise KeyError(f"no such app installed: {req.get('app')}")
        return {"screen": app.screen()}
    if op == "shell":
        result = await phone.shell.run(str(req["command"]))
        return {"stdout": result.stdout.decode(), "stderr": result.stderr.decode(), "exit": result.exit}
    raise ValueError(f"unknown op {op!r}")
