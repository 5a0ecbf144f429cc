"""The modem's settings and its SIM: what AT+CMGF, +CNMI, +CSMS, +CPIN… set.

``Settings`` is what a reboot (or ATZ / AT&F) puts back to its default;
``SimCard`` is what survives reboots and unplugs (PIN state). The command
handlers for them are :class:`StateCommands`.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_agents.modem.at import split_args

from .core import ModemCore
from .errors import Reply, cme, cms, plain_error


@dataclass(slots=True)
class Settings:
    """What a reboot (or ATZ / AT&F) puts back to its default."""

    echo: bool = True
    cmee: int = 0
    cmgf: int = 0
    cscs: str = "IRA"
    cnmi: tuple[int, int, int, int, int] = (2, 1, 0, 0, 0)
    csms: int = 0
    clip: int = 0
    crc: int = 0
    creg: int = 0
    cgreg: int = 0
    cereg: int = 0
    cops_format: int = 0
    fun: int = 1


def args_of(text: str) -> list[str]:
    """``1,"SM",,3`` → ["1", "SM", "", "3"] (quotes removed; a modem is lenient
    about an unclosed quote)."""
    return split_args(text)[0]


def int_args(text: str, *, count: int | None = None) -> list[int]:
    try:
        values = [int(a) if a else 0 for a in args_of(text)]
    except ValueError:
        raise plain_error() from None
    if count is not None and len(values) > count:
        raise plain_error()
    return values


@dataclass(slots=True)
class SimCard:
    """PIN state. ``state`` is what AT+CPIN? says."""

    pin: str | None = None
    puk: str = "12345678"
    tries: int = 3
    state: str = ""

    def __post_init__(self) -> None:
        self.state = self.state or ("SIM PIN" if self.pin else "READY")

    def power_cycle(self) -> None:
        """A PIN-protected SIM locks again when the modem restarts."""
        if self.pin and self.state == "READY":
            self.state = "SIM PIN"

    def enter(self, args: list[str]) -> None:
        """AT+CPIN="<pin>" or AT+CPIN="<puk>","<new pin>"; three wrong PINs block."""
        if self.state == "READY":
            raise cme(3)
        if self.state == "SIM PUK":
            if len(args) != 2 or args[0] != self.puk:
                raise cme(16)
            self.pin = args[1]
        elif args[0] != self.pin:
            self.tries -= 1
            if self.tries <= 0:
                self.state = "SIM PUK"
            raise cme(16)
        self.tries = 3
        self.state = "READY"


def parse_cnmi_ranges(text: str) -> list[set[int]]:
    """``(0-3),(0,1),(0,2,3),(0,2),(1)`` → one set of allowed values per parameter."""
    out: list[set[int]] = []
    for group in text.replace(" ", "").split("),("):
        allowed: set[int] = set()
        for item in group.strip("()").split(","):
            if not item:
                continue
            lo, _, hi = item.partition("-")
            allowed.update(range(int(lo), int(hi or lo) + 1))
        out.append(allowed)
    return out


class StateCommands(ModemCore):
    """V.250 basics and the SMS/SIM settings."""

    def _at_e(self, rest: str) -> None:
        if rest not in ("", "0", "1"):
            raise plain_error()
        self.settings.echo = rest == "1"

    def _at_v(self, rest: str) -> None:
        if rest not in ("", "1"):
            raise plain_error()  # numeric result codes are not simulated

    def _at_z(self, rest: str) -> None:
        self.settings = Settings(cnmi=self.profile.cnmi_default)

    def _at_cmee(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f"+CMEE: {self.settings.cmee}"])
        if rest == "=?":
            return Reply(["+CMEE: (0-2)"])
        (value,) = int_args(rest[1:], count=1) if rest.startswith("=") else [0]
        if value not in (0, 1, 2):
            raise plain_error()
        self.settings.cmee = value
        return None

    # -- SIM -----------------------------------------------------------------------

    def _at_cpin(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f"+CPIN: {self.sim.state}"])
        if rest == "=?":
            return None
        if not rest.startswith("="):
            raise plain_error()
        self.sim.enter(args_of(rest[1:]))
        return Reply(after=self._sim_unlocked)

    def _sim_unlocked(self) -> None:
        self._ready_urcs()
        self._registration_changed()
        self._network_alert()

    def _at_cpinr(self, rest: str) -> Reply:
        # SIMCom/Quectel style retry counters: +CPINR: <code>,<retries>,<default>
        return Reply([f"+CPINR: SIM PIN,{self.sim.tries},3", "+CPINR: SIM PUK,10,10"])

    def _at_cfun(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f"+CFUN: {self.settings.fun}"])
        if rest == "=?":
            return Reply(["+CFUN: (0,1,4),(0-1)"])
        args = int_args(rest[1:], count=2)
        if args[0] not in (0, 1, 4):
            raise cme(4)
        if len(args) == 2 and args[1] == 1:
            return Reply(after=self._reboot)
        self.settings.fun = args[0]
        self._registration_changed()
        if args[0] == 1:
            self._network_alert()
        return None

    def _at_cscs(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f'+CSCS: "{self.settings.cscs}"'])
        if rest == "=?":
            return Reply(['+CSCS: ("GSM","IRA","UCS2")'])
        value = rest[1:].strip().strip('"').upper()
        if value not in ("GSM", "IRA", "UCS2"):
            raise cme(4)
        self.settings.cscs = value
        return None

    # -- SMS settings ------------------------------------------------------------------

    def _at_cmgf(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([f"+CMGF: {self.settings.cmgf}"])
        if rest == "=?":
            return Reply(["+CMGF: (0)"])
        value = int_args(rest[1:], count=1)[0] if rest.startswith("=") else 0
        if value != 0:
            raise cms(303)  # text mode is not simulated: drivers fall back to PDU
        self.settings.cmgf = value
        return None

    def _at_csms(self, rest: str) -> Reply | None:
        # TS 27.005 §3.2.1: +CSMS: <service>,<mt>,<mo>,<bm>
        if rest == "?":
            return Reply([f"+CSMS: {self.settings.csms},1,1,1"])
        if rest == "=?":
            return Reply([f"+CSMS: ({','.join(map(str, self.profile.csms_values))})"])
        value = int_args(rest[1:], count=1)[0]
        if value not in self.profile.csms_values:
            raise cms(303)
        self.settings.csms = value
        self._cnma_expected = None
        return Reply(["+CSMS: 1,1,1"])

    def _at_cnmi(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply(["+CNMI: " + ",".join(map(str, self.settings.cnmi))])
        if rest == "=?":
            return Reply([f"+CNMI: {self.profile.cnmi_ranges}"])
        values = int_args(rest[1:], count=5) if rest.startswith("=") else []
        values += [0] * (5 - len(values))
        allowed = parse_cnmi_ranges(self.profile.cnmi_ranges)
        if any(v not in ok for v, ok in zip(values, allowed, strict=False)):
            raise cms(303)
        mode, mt, bm, ds, bfr = values
        if self.profile.phase2plus_needs_csms1 and self.settings.csms != 1 and (mt in (2, 3) or ds == 1):
            raise cms(303)  # phase 2+ routing needs +CSMS=1 (see the profile)
        self.settings.cnmi = (mode, mt, bm, ds, bfr)
        if bfr == 1:
            self._urc_buffer.clear()
        return None  # buffered indications go out after OK (see _respond)

    def _at_cnma(self, rest: str) -> None:
        # TS 27.005 §3.4.4: only in +CSMS=1 and only for a +CMT/+CDS that waits for it.
        if self._cnma_expected is None:
            if self.profile.strict_cnma:
                raise cms(340)
            return
        self._cnma_received()
