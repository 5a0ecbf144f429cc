"""Sans-I/O AT command engine (3GPP TS 27.007 / 27.005, V.250).

Bytes in, typed events out, bytes to send out — no I/O, no asyncio, no clock.
Shaped like websockets' protocol object::

    engine = AtEngine()
    transport.write(engine.send("AT+CSQ"))
    ...
    engine.feed(transport.read())
    for event in engine.events():
        ...   # InfoLine, FinalResult, Urc, Prompt, Discarded

Decisions that matter (docs/modem.md has the long form):

- **Reply vs unsolicited.** A line whose prefix is a known URC (``+CMTI``,
  ``RING``, ``^RSSI``…) comes out as :class:`Urc` even in the middle of a
  reply — *unless* the command in progress owns that prefix (``+CREG: 0,1``
  while ``AT+CREG?`` runs is an :class:`InfoLine`). ``+CMT``, ``+CDS`` (PDU
  form) and ``+CBM`` take the next line with them as ``Urc.pdu``.
- **Echo.** While a command runs, a line equal to the command (or, after a
  prompt, to the PDU sent) before any reply line is the modem's echo and is
  dropped, whatever ``ATE`` says — this covers "echo on" and the ``ATE0`` that
  is itself still echoed.
- **Noise.** Bytes outside printable ASCII (NUL, 0x80–0xFF, control
  characters other than CR/LF/TAB) are deleted on arrival and counted in
  :attr:`AtEngine.noise_bytes`; they never wedge the engine. Configure the
  modem with ``AT+CSCS="UCS2"``/``"IRA"``/``"GSM"`` and PDU mode: the engine
  is 7-bit clean by design.
- **Length cap.** A line longer than ``max_line`` (4 KiB) is *dropped*: the
  engine reports :class:`Discarded` ``("line too long")``, skips to the next
  line ending and carries on. It does not raise, because a serial line can
  only be resynchronised at a line ending and the daemon must keep the modem.
- **Errors.** :class:`LocalProtocolError` when the caller misuses the API
  (a second command while one is in progress, a PDU without a prompt, a
  command that is not ``AT…``). :class:`RemoteProtocolError` from the parse
  helpers (:func:`parse_args`) when a line the modem sent is malformed.
  ``feed()`` never raises: what it cannot use comes out as :class:`Discarded`.

The command state machine is data (:data:`TRANSITIONS`), h11-style.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AtEngine",
    "CommandState",
    "Discarded",
    "Event",
    "FinalResult",
    "InfoLine",
    "LocalProtocolError",
    "Prompt",
    "ProtocolError",
    "RemoteProtocolError",
    "ResultKind",
    "TRANSITIONS",
    "URC_PREFIXES",
    "Urc",
    "parse_args",
]

DEFAULT_MAX_LINE: Final = 4096
CTRL_Z: Final = b"\x1a"


# --------------------------------------------------------------------------
# errors


class ProtocolError(Exception):
    """Base of the engine's errors."""


class LocalProtocolError(ProtocolError):
    """We (the caller) misused the engine."""


class RemoteProtocolError(ProtocolError):
    """The modem sent something that does not parse."""


# --------------------------------------------------------------------------
# events


class ResultKind(enum.StrEnum):
    OK = "OK"
    ERROR = "ERROR"
    CME = "CME"  # +CME ERROR: <n|text>   (27.007 equipment error)
    CMS = "CMS"  # +CMS ERROR: <n|text>   (27.005 message service error)
    NO_CARRIER = "NO_CARRIER"
    BUSY = "BUSY"
    NO_ANSWER = "NO_ANSWER"
    NO_DIALTONE = "NO_DIALTONE"
    CONNECT = "CONNECT"


@dataclass(frozen=True, slots=True)
class FinalResult:
    """The line that ends the command in progress.

    ``code`` is the numeric error for CME/CMS (``None`` if the modem gave a
    text we do not know — e.g. with ``AT+CMEE=2``), the speed for
    ``CONNECT 9600``, else ``None``. ``text`` is the line as received.
    """

    kind: ResultKind
    code: int | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is ResultKind.OK


@dataclass(frozen=True, slots=True)
class InfoLine:
    """A line of the reply to the command in progress."""

    text: str


@dataclass(frozen=True, slots=True)
class Urc:
    """An unsolicited result code.

    ``name`` is the prefix (``"+CMTI"``, ``"^RSSI"``) or the whole word for
    bare URCs (``"RING"``, ``"NO CARRIER"``); ``args`` the comma-separated
    arguments with quotes removed; ``text`` the line as received. For the
    two-line URCs (``+CMT``, ``+CDS`` in PDU form, ``+CBM``) ``pdu`` is the
    line that followed (the hex PDU; the message text in text mode).
    """

    name: str
    args: tuple[str, ...] = ()
    text: str = ""
    pdu: str | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """The ``> `` after ``AT+CMGS=<n>`` (no line ending): send the PDU now."""


@dataclass(frozen=True, slots=True)
class Discarded:
    """Input the engine dropped: ``reason`` is "line too long", "unexpected
    line" (no command in progress and not a URC), "late reply" (a line of the
    reply to a command the caller cancelled) or "stray final result" (an
    ``OK``/``ERROR`` with no command in progress). ``data`` holds at most 64
    bytes of the line."""

    reason: str
    data: bytes


Event = FinalResult | InfoLine | Urc | Prompt | Discarded


# --------------------------------------------------------------------------
# the command state machine, as data


class CommandState(enum.Enum):
    IDLE = "idle"
    WAIT_RESULT = "wait-result"  # command sent, reply lines and a final result to come
    WAIT_PROMPT = "wait-prompt"  # AT+CMGS=/AT+CMGW= sent, "> " (or an error) to come
    PROMPTED = "prompted"  # "> " received, send_pdu() now


# {state: {trigger: next state}}; a trigger missing from a state's row is a
# LocalProtocolError when it comes from the caller (send, send_pdu).
TRANSITIONS: Final[dict[CommandState, dict[str, CommandState]]] = {
    CommandState.IDLE: {
        "send": CommandState.WAIT_RESULT,
        "send-prompting": CommandState.WAIT_PROMPT,
        "cancel": CommandState.IDLE,
    },
    CommandState.WAIT_RESULT: {
        "final": CommandState.IDLE,
        "cancel": CommandState.IDLE,
    },
    CommandState.WAIT_PROMPT: {
        "prompt": CommandState.PROMPTED,
        "final": CommandState.IDLE,
        "cancel": CommandState.IDLE,
    },
    CommandState.PROMPTED: {
        "send-pdu": CommandState.WAIT_RESULT,
        "final": CommandState.IDLE,
        "cancel": CommandState.IDLE,
    },
}


# --------------------------------------------------------------------------
# classification tables

#: Prefixes (before the ``:``) that are unsolicited unless the command in
#: progress owns them. Any ``^XXX:`` line (Huawei) is treated the same way.
URC_PREFIXES: Final = frozenset(
    {
        "+CMTI", "+CMT", "+CDS", "+CDSI", "+CBM", "+CBMI",
        "+CLIP", "+CCWA", "+CRING", "+COLP", "+CSSI", "+CSSU", "+CCCM", "+CIEV",
        "+CREG", "+CGREG", "+CEREG", "+C5GREG", "+CGEV",
        "+CUSD", "+CPIN", "+CFUN", "+CTZV", "+CTZE", "+CTZR", "+PSUTTZ", "*PSUTTZ",
        "+QIND", "+QUSIM", "+CUSATP", "+STIN", "+CSQN", "+CMGRI",
    }
)

#: Whole-line URCs (no ``:``). "SMS DONE" / "PB DONE": SIMCom's ready indications
#: (SIM7500/SIM7600 AT command manual).
URC_WORDS: Final = frozenset(
    {"RING", "RDY", "SMS READY", "SMS DONE", "CALL READY", "PB DONE", "NORMAL POWER DOWN",
     "UNDER-VOLTAGE POWER DOWN", "UNDER-VOLTAGE WARNNING", "OVER-VOLTAGE POWER DOWN"}
)

#: Two-line URCs: the next line belongs to them. ``+CDS`` only in its PDU form
#: (a single length argument); in text mode it is one line.
_TWO_LINE: Final = frozenset({"+CMT", "+CDS", "+CBM"})

#: Call-progress words: the final result of ATD/ATA, a URC otherwise.
_CALL_RESULTS: Final = {
    "NO CARRIER": ResultKind.NO_CARRIER,
    "BUSY": ResultKind.BUSY,
    "NO ANSWER": ResultKind.NO_ANSWER,
    "NO DIALTONE": ResultKind.NO_DIALTONE,
    "NO DIAL TONE": ResultKind.NO_DIALTONE,
}

#: Verbose +CME texts (AT+CMEE=2) mapped back to their numbers (27.007 9.2).
CME_TEXTS: Final = {
    "phone failure": 0,
    "no connection to phone": 1,
    "operation not allowed": 3,
    "operation not supported": 4,
    "ph-sim pin required": 5,
    "sim not inserted": 10,
    "sim pin required": 11,
    "sim puk required": 12,
    "sim failure": 13,
    "sim busy": 14,
    "sim wrong": 15,
    "incorrect password": 16,
    "sim pin2 required": 17,
    "sim puk2 required": 18,
    "memory full": 20,
    "invalid index": 21,
    "not found": 22,
    "memory failure": 23,
    "text string too long": 24,
    "invalid characters in text string": 25,
    "no network service": 30,
    "network timeout": 31,
    "network not allowed - emergency calls only": 32,
    "unknown": 100,
}

#: Verbose +CMS texts (27.005 3.2.5), the usual ones.
CMS_TEXTS: Final = {
    "me failure": 300,
    "sms service of me reserved": 301,
    "operation not allowed": 302,
    "operation not supported": 303,
    "invalid pdu mode parameter": 304,
    "invalid text mode parameter": 305,
    "sim not inserted": 310,
    "sim pin required": 311,
    "sim failure": 313,
    "sim busy": 314,
    "sim wrong": 315,
    "memory failure": 320,
    "invalid memory index": 321,
    "memory full": 322,
    "smsc address unknown": 330,
    "no network service": 331,
    "network timeout": 332,
    "unknown error": 500,
}

# Deleted on arrival: C0 controls except TAB/LF/CR, DEL and every 8-bit byte.
_NOISE: Final = bytes(b for b in range(256) if b < 0x20 and b not in (0x09, 0x0A, 0x0D) or b >= 0x7F)
_PREFIX_RE: Final = re.compile(r"^([+^*$%#][A-Za-z0-9_]+):")
_CMD_PREFIX_RE: Final = re.compile(r"([+^*$%#][A-Za-z0-9_]+)")
_PROMPTING_RE: Final = re.compile(r"^AT\+(CMGS|CMGW|CMGC|CMSS|CSIM|CRSM)=", re.IGNORECASE)
_PROMPTING_ONLY: Final = ("CMGS", "CMGW", "CMGC")
_ECHO_RE: Final = re.compile(r"^AT(?:&?[A-DF-Z][0-9]*)*E([01]?)")


# --------------------------------------------------------------------------
# helpers


def parse_args(text: str) -> tuple[str, ...]:
    """Split ``+CMTI: "SM",3`` (or just ``"SM",3``) into ``("SM", "3")``.

    Quotes are removed, commas inside quotes kept, empty arguments kept as
    ``""``. Raises :class:`RemoteProtocolError` on an unterminated quote.
    """
    m = _PREFIX_RE.match(text)
    if m:
        text = text[m.end():]
    text = text.strip()
    if not text:
        return ()
    args, quoted = split_args(text)
    if quoted:
        raise RemoteProtocolError(f"unterminated quote in {text[:64]!r}")
    return tuple(args)


def split_args(text: str) -> tuple[list[str], bool]:
    """``1,"SM",,3`` → (["1", "SM", "", "3"], False): quotes removed, commas
    inside quotes kept. The flag is True when a quote was left open."""
    args: list[str] = []
    cur: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    args.append("".join(cur).strip())
    return args, quoted


def _lenient_args(text: str) -> tuple[str, ...]:
    try:
        return parse_args(text)
    except RemoteProtocolError:
        return ()


def _parse_final(line: str, *, dialling: bool) -> FinalResult | None:
    upper = line.upper()
    if upper == "OK":
        return FinalResult(ResultKind.OK, None, line)
    if upper in ("ERROR", "COMMAND NOT SUPPORT", "TOO MANY PARAMETERS"):
        return FinalResult(ResultKind.ERROR, None, line)
    for prefix, kind, table in (
        ("+CME ERROR:", ResultKind.CME, CME_TEXTS),
        ("+CMS ERROR:", ResultKind.CMS, CMS_TEXTS),
    ):
        if upper.startswith(prefix):
            detail = line[len(prefix):].strip()
            code = int(detail) if detail.isdigit() else table.get(detail.lower())
            return FinalResult(kind, code, line)
    if dialling:
        call_kind = _CALL_RESULTS.get(upper)
        if call_kind is not None:
            return FinalResult(call_kind, None, line)
        if upper == "CONNECT" or upper.startswith("CONNECT "):
            rest = line[7:].strip()
            return FinalResult(ResultKind.CONNECT, int(rest) if rest.isdigit() else None, line)
    return None


def _command_prefixes(command: str) -> frozenset[str]:
    """``AT+CREG=2;+CREG?`` → {"+CREG"}: the prefixes this command's reply uses."""
    body = command[2:]
    return frozenset(p.upper() for p in _CMD_PREFIX_RE.findall(body))


# --------------------------------------------------------------------------
# the engine


class AtEngine:
    """The DTE side of an AT link, without I/O.

    ``send()``/``send_pdu()`` return the bytes to write; ``feed()`` takes the
    bytes read; ``events()`` drains what they produced. One command at a
    time: ``busy`` tells whether one is in progress; ``cancel()`` gives up on
    it (after a timeout) — its late lines are then dropped as Discarded until
    its final result arrives or the next command is sent.
    """

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 16:
            raise LocalProtocolError("max_line must be at least 16")
        self.max_line = max_line
        self.state = CommandState.IDLE
        #: The command in progress (without the CR), or None.
        self.command: str | None = None
        #: Last echo setting the modem accepted (ATE0/ATE1 → OK); None = unknown.
        self.echo: bool | None = None
        #: Bytes deleted as noise since creation.
        self.noise_bytes = 0
        self._buf = bytearray()
        self._events: list[Event] = []
        self._prefixes: frozenset[str] = frozenset()
        self._dialling = False
        self._expect_echo: str | None = None  # upper-cased echo still possible
        self._pdu: str | None = None
        self._two_line: Urc | None = None  # header of a +CMT/+CDS awaiting its PDU line
        self._skipping = False  # inside an over-long line, dropping to its end
        self._stale: frozenset[str] | None = None  # prefixes of a cancelled command

    # -- state ------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.state is not CommandState.IDLE

    def _transition(self, trigger: str) -> None:
        try:
            self.state = TRANSITIONS[self.state][trigger]
        except KeyError:
            raise LocalProtocolError(
                f"cannot {trigger} in state {self.state.value}"
                + (f" (command in progress: {self.command!r})" if self.command else "")
            ) from None

    # -- outgoing -----------------------------------------------------------

    def send(self, command: str) -> bytes:
        """Bytes for ``command`` (``"AT+CSQ"``; the CR is added)."""
        if self.busy:
            raise LocalProtocolError(f"command {self.command!r} still in progress")
        if not command[:2].upper() == "AT":
            raise LocalProtocolError(f"not an AT command: {command[:32]!r}")
        if len(command) > self.max_line or not command.isascii() or not command.isprintable():
            raise LocalProtocolError("command must be printable ASCII, one line, within max_line")
        m = _PROMPTING_RE.match(command)
        prompting = m is not None and m.group(1).upper() in _PROMPTING_ONLY
        self._transition("send-prompting" if prompting else "send")
        self.command = command
        self._prefixes = _command_prefixes(command)
        upper = command.upper()
        self._dialling = upper.startswith(("ATD", "ATA", "ATO"))
        self._expect_echo = upper.strip()
        self._pdu = None
        self._stale = None
        return command.encode("ascii") + b"\r"

    def send_pdu(self, pdu_hex: str) -> bytes:
        """Bytes for the PDU after a :class:`Prompt` (Ctrl-Z appended)."""
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", pdu_hex):
            raise LocalProtocolError("PDU must be a non-empty even-length hex string")
        if len(pdu_hex) > self.max_line:
            raise LocalProtocolError("PDU longer than max_line")
        self._transition("send-pdu")
        self._pdu = pdu_hex
        self._expect_echo = pdu_hex.upper()
        return pdu_hex.encode("ascii") + CTRL_Z

    def cancel(self) -> bytes:
        """Give up on the command in progress (e.g. after a timeout).

        Returns the bytes to write: ESC when the modem may be waiting for a
        PDU (it aborts the message entry), else nothing.
        """
        out = b"\x1b" if self.state in (CommandState.WAIT_PROMPT, CommandState.PROMPTED) else b""
        if self.busy:
            self._stale = self._prefixes
        self._transition("cancel")
        self._reset_command()
        return out

    def _reset_command(self) -> None:
        self.command = None
        self._prefixes = frozenset()
        self._dialling = False
        self._expect_echo = None
        self._pdu = None

    # -- incoming -----------------------------------------------------------

    def events(self) -> list[Event]:
        """Drain the events produced so far."""
        out, self._events = self._events, []
        return out

    def feed(self, data: bytes) -> None:
        """Take bytes read from the modem. Never raises on content."""
        clean = data.translate(None, _NOISE)
        self.noise_bytes += len(data) - len(clean)
        self._buf += clean
        self._process()

    def _process(self) -> None:
        buf = self._buf
        while buf:
            if self._skipping:
                end = _find_eol(buf)
                if end < 0:
                    buf.clear()
                    return
                del buf[: end + 1]
                self._skipping = False
                continue
            # skip line endings between lines
            i = 0
            while i < len(buf) and buf[i] in b"\r\n":
                i += 1
            if i:
                del buf[:i]
                continue
            if self.state is CommandState.WAIT_PROMPT and buf[:1] == b">":
                del buf[: 2 if buf[1:2] == b" " else 1]
                self._transition("prompt")
                self._events.append(Prompt())
                continue
            end = _find_eol(buf)
            if end < 0:
                if len(buf) > self.max_line:
                    self._events.append(Discarded("line too long", bytes(buf[:64])))
                    self._skipping = True
                    buf.clear()
                return
            raw = bytes(buf[:end])
            del buf[: end + 1]
            if len(raw) > self.max_line:
                self._events.append(Discarded("line too long", raw[:64]))
                continue
            line = raw.decode("ascii").strip()
            if line:
                self._line(line, raw)

    def _line(self, line: str, raw: bytes) -> None:
        # the second line of a two-line URC, whatever it looks like
        if self._two_line is not None:
            head, self._two_line = self._two_line, None
            self._events.append(Urc(head.name, head.args, head.text, line))
            return
        upper = line.upper()
        if self._expect_echo is not None and upper == self._expect_echo:
            self._expect_echo = None
            return
        if self.busy:
            final = _parse_final(line, dialling=self._dialling)
            if final is not None:
                self._expect_echo = None
                self._final(final)
                return
        urc = self._as_urc(line, upper)
        if urc is not None:
            if urc.name in _TWO_LINE and (urc.name != "+CDS" or _is_length(urc.args)):
                self._two_line = urc
            else:
                self._events.append(urc)
            return
        if self.busy:
            self._expect_echo = None
            self._events.append(InfoLine(line))
            return
        # idle: the late reply of a cancelled command, or noise
        if self._stale is not None:
            if _parse_final(line, dialling=True) is not None:
                self._stale = None
            self._events.append(Discarded("late reply", raw[:64]))
            return
        if _parse_final(line, dialling=True) is not None:
            self._events.append(Discarded("stray final result", raw[:64]))
            return
        m = _PREFIX_RE.match(line)
        if m:  # looks like a URC we do not know: let the caller see it
            self._events.append(Urc(m.group(1).upper(), _lenient_args(line), line))
            return
        self._events.append(Discarded("unexpected line", raw[:64]))

    def _as_urc(self, line: str, upper: str) -> Urc | None:
        m = _PREFIX_RE.match(line)
        if m:
            name = m.group(1).upper()
            if name in self._prefixes:
                return None
            if self._stale is not None and name in self._stale and not self.busy:
                return None
            if name in URC_PREFIXES or name.startswith("^"):
                return Urc(name, _lenient_args(line), line)
            return None
        if upper in URC_WORDS or upper.startswith("^") and upper[1:].replace("_", "").isalnum():
            return Urc(upper, (), line)
        if upper in _CALL_RESULTS or upper == "CONNECT" and not self.busy:
            # call progress outside ATD/ATA: the remote side hung up, etc.
            return Urc(upper, (), line)
        return None

    def _final(self, final: FinalResult) -> None:
        if final.ok and not self._dialling:
            m = _ECHO_RE.match((self.command or "").upper())
            if m:
                self.echo = m.group(1) == "1"  # plain ATE means ATE0
        self._transition("final")
        self._reset_command()
        self._events.append(final)


def _find_eol(buf: bytearray) -> int:
    cr = buf.find(b"\r")
    lf = buf.find(b"\n")
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


def _is_length(args: tuple[str, ...]) -> bool:
    return len(args) == 1 and args[0].isdigit()
