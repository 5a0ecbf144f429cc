"""Command lines in, replies out: the byte pump, V.250 line splitting, and
the dispatch table from command name to handler.

A command line runs with the configured latency; while it runs, received
bytes wait (a modem reads the next line only after the final result) and
SMS indications are held as AT+CNMI <mode> says. After ``> `` the bytes are
a PDU, ended by Ctrl-Z or cancelled by ESC (TS 27.005 §3.5.1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from .calls import CallCommands
from .core import ModemCore, log
from .errors import CME_TEXT, CMS_TEXT, CommandError, Reply, cme, cms, plain_error
from .info import InfoCommands, at_cereg, at_cgmi, at_cgmm, at_cgmr, at_cgreg, at_cgsn, at_cimi, at_creg
from .network import Network
from .state import StateCommands
from .storage import StorageCommands

MAX_COMMAND_LINE: Final = 1024
MAX_PDU_HEX: Final = 2 * 200
CTRL_Z: Final = 0x1A
ESC: Final = 0x1B


def split_command_line(body: str) -> list[tuple[str, str]]:
    """Split what follows ``AT`` into (name, rest) pairs.

    ``E0V1+CMGF=0;+CNMI=2,1`` → [("E", "0"), ("V", "1"), ("+CMGF", "=0"),
    ("+CNMI", "=2,1")]. ``D`` takes the rest of the line. Raises ValueError
    on what V.250 does not allow.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c in " ;":
            i += 1
        elif c in "+^*$%#":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] == "_"):
                j += 1
            k, quoted = j, False
            while k < n and (quoted or body[k] != ";"):
                if body[k] == '"':
                    quoted = not quoted
                k += 1
            out.append((body[i:j].upper(), body[j:k].strip()))
            i = k
        elif c in "Dd":
            out.append(("D", body[i + 1 :].strip()))
            break
        elif c == "&" and i + 1 < n and body[i + 1].isalpha():
            j = i + 2
            while j < n and body[j].isdigit():
                j += 1
            out.append(("&" + body[i + 1].upper(), body[i + 2 : j]))
            i = j
        elif c in "Ss":
            j = i + 1
            while j < n and (body[j].isdigit() or body[j] in "=?"):
                j += 1
            out.append(("S", body[i + 1 : j]))
            i = j
        elif c.isalpha():
            j = i + 1
            while j < n and body[j].isdigit():
                j += 1
            out.append((c.upper(), body[i + 1 : j]))
            i = j
        else:
            raise ValueError(f"unexpected {c!r} in command line")
    return out


def _ok(self: Any, rest: str) -> None:
    return None


Handler = Callable[[Any, str], Reply | None]

HANDLERS: Final[dict[str, Handler]] = {
    "E": StateCommands._at_e,
    "V": StateCommands._at_v,
    "Q": _ok,
    "X": _ok,
    "Z": StateCommands._at_z,
    "I": InfoCommands._at_i,
    "S": InfoCommands._at_s,
    "D": CallCommands._at_d,
    "A": CallCommands._at_a,
    "H": CallCommands._at_h,
    "&F": StateCommands._at_z,
    "&C": _ok,
    "&D": _ok,
    "&K": _ok,
    "&W": _ok,
    "+CMEE": StateCommands._at_cmee,
    "+CGMI": at_cgmi,
    "+GMI": at_cgmi,
    "+CGMM": at_cgmm,
    "+GMM": at_cgmm,
    "+CGMR": at_cgmr,
    "+GMR": at_cgmr,
    "+CGSN": at_cgsn,
    "+GSN": at_cgsn,
    "+CIMI": at_cimi,
    "+CCID": InfoCommands._at_ccid,
    "+ICCID": InfoCommands._at_ccid,
    "+QCCID": InfoCommands._at_ccid,
    "+GCAP": InfoCommands._at_gcap,
    "+CPIN": StateCommands._at_cpin,
    "+CPINR": StateCommands._at_cpinr,
    "+CFUN": StateCommands._at_cfun,
    "+CSQ": InfoCommands._at_csq,
    "+CREG": at_creg,
    "+CGREG": at_cgreg,
    "+CEREG": at_cereg,
    "+COPS": InfoCommands._at_cops,
    "+CNUM": InfoCommands._at_cnum,
    "+CSCS": StateCommands._at_cscs,
    "+CLIP": CallCommands._at_clip,
    "+CRC": CallCommands._at_crc,
    "+COLP": _ok,
    "+CVHU": _ok,
    "+CHUP": CallCommands._at_h,
    "+CLCC": CallCommands._at_clcc,
    "+CUSD": InfoCommands._at_cusd,
    "+CCLK": InfoCommands._at_cclk,
    "+CBC": InfoCommands._at_cbc,
    "+CMGF": StateCommands._at_cmgf,
    "+CSMS": StateCommands._at_csms,
    "+CNMI": StateCommands._at_cnmi,
    "+CNMA": StateCommands._at_cnma,
    "+CPMS": StorageCommands._at_cpms,
    "+CMGL": StorageCommands._at_cmgl,
    "+CMGR": StorageCommands._at_cmgr,
    "+CMGD": StorageCommands._at_cmgd,
    "+CMGS": Network._at_cmgs,
    "+CMGW": Network._at_cmgw,
    "+CMSS": Network._at_cmss,
    "+CSCA": Network._at_csca,
    "+CSMP": Network._at_csmp,
    "+CSDH": Network._at_csdh,
}


class CommandInput(ModemCore):
    """Bytes from the DTE → command lines and PDUs → replies."""

    slow: float
    _rx: bytearray
    _line: bytearray
    _last_line: str
    _extra_handlers: dict[str, Handler]


    def _on_data(self, data: bytes) -> None:
        self._rx += data
        self._pump()

    def _pump(self) -> None:
        """Consume received bytes while no command is executing."""
        while self._rx and not self._busy:
            byte = self._rx[0]
            del self._rx[0]
            if self.settings.echo:
                self._write(bytes([byte]))
            if self._pdu_length is not None:
                self._pdu_byte(byte)
            else:
                self._command_byte(byte)

    def _command_byte(self, byte: int) -> None:
        if byte == 0x0D:
            line = self._line.decode("ascii", "replace").strip()
            self._line.clear()
            if line:
                self._start_line(line)
        elif byte == 0x0A:
            pass
        elif byte in (0x08, 0x7F):
            if self._line:
                del self._line[-1]
        elif len(self._line) >= MAX_COMMAND_LINE:
            self._line.clear()
            self._final_error(plain_error())
        elif byte == ord("/") and self._line.upper() == b"A":
            self._line.clear()  # A/ repeats the last command line at once
            if self._last_line:
                self._start_line(self._last_line)
        elif 0x20 <= byte < 0x7F:
            self._line.append(byte)

    def _pdu_byte(self, byte: int) -> None:
        if byte == CTRL_Z:
            hex_text = self._line.decode("ascii", "replace").strip()
            length = self._pdu_length
            self._line.clear()
            self._pdu_length = None
            assert length is not None
            self._run(lambda: self._pdu_received(length, hex_text))
        elif byte == ESC:
            self._line.clear()
            self._pdu_length = None
            self._run(lambda: Reply())  # message entry cancelled
        elif byte in b"\r\n ":
            pass
        elif len(self._line) >= MAX_PDU_HEX:
            self._line.clear()
            self._pdu_length = None
            self._run(lambda: _raise(cms(304)))
        else:
            self._line.append(byte)

    def _start_line(self, line: str) -> None:
        self.commands.append(line)
        log.debug("<- %s", line)
        if line[:2].upper() != "AT":
            return  # not for us: a modem ignores what does not start with AT
        self._last_line = line
        self._run(lambda: self._execute(line[2:]))

    def _run(self, handler: Callable[[], Reply]) -> None:
        """Execute a command (or PDU) with the configured latency."""
        self._busy = True
        self._spawn(self._respond(handler))

    async def _respond(self, handler: Callable[[], Reply]) -> None:
        try:
            try:
                reply = handler()
            except CommandError as error:
                await self._delay()
                self._final_error(error)
                return
            except Exception:  # a bug in a handler must not kill the modem
                log.exception("command handler failed")
                await self._delay()
                self._final_error(cme(100))
                return
            await self._delay()
            if reply.lines:
                lines = list(reply.lines)
                if self.fault_options.urcs_in_replies:  # an unasked line among the reply's own
                    lines.insert(1, self.profile.noise_urc)
                self._write(b"\r\n" + "\r\n".join(lines).encode("ascii", "replace") + b"\r\n")
                if self._delay_seconds():
                    await self._delay()
            if reply.final_delay > 0:
                await asyncio.sleep(reply.final_delay)
            if self.fault_options.urcs_in_replies and not reply.lines:
                self._write(f"\r\n{self.profile.noise_urc}\r\n".encode())
            if reply.prompt:
                self._write(b"\r\n> ")
                return  # still "busy" for URC buffering: the PDU is being typed
            self._write(f"\r\n{reply.final}\r\n".encode())
            if reply.after is not None:
                reply.after()
        finally:
            self._busy = False
            if self._pdu_length is None:
                self._flush_urcs()
            if not self._closed:
                self._pump()

    def _delay_seconds(self) -> float:
        return self.latency + self.slow

    async def _delay(self) -> None:
        seconds = self._delay_seconds()
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _final_error(self, error: CommandError) -> None:
        if error.kind == "ERROR" or self.settings.cmee == 0:
            text = "ERROR"
        elif self.settings.cmee == 1:
            text = f"+{error.kind} ERROR: {error.code}"
        else:
            table = CME_TEXT if error.kind == "CME" else CMS_TEXT
            text = f"+{error.kind} ERROR: {table.get(error.code, error.code)}"
        self._write(f"\r\n{text}\r\n".encode())

    def _execute(self, body: str) -> Reply:
        try:
            parts = split_command_line(body)
        except ValueError:
            raise plain_error() from None
        reply = Reply()
        for name, rest in parts:
            handler = self._extra_handlers.get(name) or HANDLERS.get(name)
            if handler is None:
                raise plain_error()
            result = handler(self, rest)
            if result is None:
                continue
            reply.lines.extend(result.lines)
            if result.after is not None:
                reply.after = result.after
            reply.final_delay = max(reply.final_delay, result.final_delay)
            if result.prompt or result.final != "OK":
                reply.prompt, reply.final = result.prompt, result.final
                break
        return reply


def _raise(error: CommandError) -> Reply:
    raise error
