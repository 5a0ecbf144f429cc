"""Logging set-up: readable lines by default, ``--log-format json`` for journald
and log shippers (one JSON object a line), phone numbers masked.

Policy (STYLE.md): no message body, access key or token at INFO or above;
phone numbers in INFO+ records are masked by :class:`MaskNumbers`
(``+33612345678`` → ``+336****5678``). DEBUG is for troubleshooting and is
left as written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from device_agents.common import mask_number

# "+" then 7 to 15 digits, optionally grouped by spaces, dots or dashes (E.164 as people write it).
E164 = re.compile(r"(?<![\w+])\+[1-9](?:[ .\-]?\d){6,14}(?![\d])")
# Record attributes (from ``extra=`` or a LoggerAdapter) carried as JSON fields.
CONTEXT_FIELDS = {"device": "device", "device_id": "device", "job": "job", "job_id": "job",
                  "account": "account", "event_id": "event"}
FORMATS = ("text", "json")


def mask_numbers(text: str) -> str:
    return E164.sub(lambda m: mask_number(re.sub(r"[ .\-]", "", m.group(0))), text)


class MaskNumbers(logging.Filter):
    """Masks E.164-looking phone numbers in records at INFO and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
            return True
        masked = mask_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, and device/job ids when present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attr, name in CONTEXT_FIELDS.items():
            value = getattr(record, attr, None)
            if value is not None and name not in out:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [device=… job=…]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        context = []
        for attr, name in CONTEXT_FIELDS.items():
            value = getattr(record, attr, None)
            if value is not None and f"{name}=" not in line and str(value) not in record.getMessage():
                context.append(f"{name}={value}")
        return f"{line} [{' '.join(context)}]" if context else line


def setup(level: str = "INFO", fmt: str = "text", *, stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger (replacing earlier handlers); returns the handler."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(MaskNumbers())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Libraries' chatter stays out of INFO (websockets logs every handshake failure).
    for name in ("websockets", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
