"""How a command handler ends a command line with an error, and the texts
of AT+CMEE=2 (TS 27.007 §9.2 for +CME, TS 27.005 §3.2.5 for +CMS)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final


class CommandError(Exception):
    """Ends the command line with an error result."""

    def __init__(self, kind: str, code: int) -> None:
        super().__init__(kind, code)
        self.kind = kind  # "CME" | "CMS" | "ERROR"
        self.code = code


def cme(code: int) -> CommandError:
    return CommandError("CME", code)


def cms(code: int) -> CommandError:
    return CommandError("CMS", code)


def plain_error() -> CommandError:
    return CommandError("ERROR", 0)


CME_TEXT: Final = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    14: "SIM busy",
    16: "incorrect password",
    21: "invalid index",
    30: "no network service",
    100: "unknown",
}
CMS_TEXT: Final = {
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    311: "SIM PIN required",
    316: "SIM PUK required",
    321: "invalid memory index",
    322: "memory full",
    331: "no network service",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}


@dataclass(slots=True)
class Reply:
    """What one command answers: information lines, then a prompt or a final result."""

    lines: list[str] = field(default_factory=list)
    prompt: bool = False  # answer "> " and read a PDU
    final: str = "OK"
    after: Callable[[], None] | None = None  # run once the final result is out
    final_delay: float = 0.0  # seconds between the information lines and the final result
