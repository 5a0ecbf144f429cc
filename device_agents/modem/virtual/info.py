"""Identification, registration and the odd commands drivers send while probing.

TS 27.007 §5 (+CGMI/+CGMM/+CGMR/+CGSN/+CIMI), §7.2 (+CREG, and +CGREG/+CEREG
in §10.1), §7.3 (+COPS), §8.5 (+CSQ), §7.1 (+CNUM), §7.15 (+CUSD).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .core import ModemCore, toa
from .errors import Reply, cme, plain_error
from .state import args_of, int_args


def _info(value_attr: str, *, sim: bool = False) -> Callable[[ModemCore, str], Reply | None]:
    def handler(self: ModemCore, rest: str) -> Reply | None:
        if rest == "=?":
            return None
        if rest:
            raise plain_error()
        if sim:
            self._need_sim()
        return Reply([str(getattr(self, value_attr))])

    return handler


def _reg(name: str, attr: str) -> Callable[[ModemCore, str], Reply | None]:
    def handler(self: ModemCore, rest: str) -> Reply | None:
        if rest == "?":
            n = getattr(self.settings, attr)
            extra = ',"1A2B","01C2D3E4",7' if n == 2 and self._registered() else ""
            return Reply([f"{name}: {n},{self._reg_status()}{extra}"])
        if rest == "=?":
            return Reply([f"{name}: (0-2)"])
        args = int_args(rest[1:], count=1) if rest.startswith("=") else [0]
        if args[0] not in (0, 1, 2):
            raise cme(4)
        setattr(self.settings, attr, args[0])
        return None

    return handler


at_cgmi = _info("manufacturer")
at_cgmm = _info("model")
at_cgmr = _info("revision")
at_cgsn = _info("imei")
at_cimi = _info("imsi", sim=True)
at_creg = _reg("+CREG", "creg")
at_cgreg = _reg("+CGREG", "cgreg")
at_cereg = _reg("+CEREG", "cereg")


class InfoCommands(ModemCore):
    manufacturer: str
    model: str
    revision: str

    def _at_i(self, rest: str) -> Reply:
        return Reply([self.manufacturer, self.model, f"Revision: {self.revision}"])

    def _at_s(self, rest: str) -> Reply | None:
        return Reply(["000"]) if rest.endswith("?") else None

    def _at_ccid(self, rest: str) -> Reply | None:
        if rest == "=?":
            return None
        return Reply([f"+CCID: {self.iccid}"])

    def _at_gcap(self, rest: str) -> Reply:
        return Reply(["+GCAP: +CGSM"])

    def _at_csq(self, rest: str) -> Reply:
        if rest == "=?":
            return Reply(["+CSQ: (0-31,99),(0-7,99)"])
        return Reply([f"+CSQ: {self.rssi if self._registered() else 99},99"])

    def _at_cops(self, rest: str) -> Reply | None:
        if rest == "?":
            if not self._registered():
                return Reply(["+COPS: 0"])
            fmt = self.settings.cops_format
            name = self.operator_code if fmt == 2 else self._text(self.operator)
            return Reply([f'+COPS: 0,{fmt},"{name}",7'])
        if rest == "=?":
            op = self._text(self.operator)
            return Reply([f'+COPS: (2,"{op}","{op}","{self.operator_code}",7),,(0-4),(0-2)'])
        args = args_of(rest[1:])
        if args and args[0] == "3" and len(args) >= 2:
            if args[1] not in ("0", "1", "2"):
                raise cme(4)
            self.settings.cops_format = int(args[1])
        return None

    def _at_cnum(self, rest: str) -> Reply | None:
        if rest == "=?":
            return None
        self._need_sim()
        return Reply([f'+CNUM: "","{self._text(self.number)}",{toa(self.number)}'])

    def _at_cusd(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply(["+CUSD: 0"])
        if rest == "=?":
            return Reply(["+CUSD: (0-2)"])
        args = args_of(rest[1:])
        if len(args) >= 2 and args[1]:
            self._need_sim()
            answer = self._text("Solde: 10,00 EUR")

            def answer_later() -> None:
                self._later(0.05, self._urc, f'+CUSD: 0,"{answer}",15')

            return Reply(after=answer_later)
        return None

    def _at_cclk(self, rest: str) -> Reply | None:
        if rest == "?":
            return Reply([datetime.now(UTC).strftime('+CCLK: "%y/%m/%d,%H:%M:%S+00"')])
        return None

    def _at_cbc(self, rest: str) -> Reply:
        return Reply(["+CBC: 0,100,4200"])


class Quectel(ModemCore):
    def _at_qurccfg(self, rest: str) -> Reply | None:
        # Quectel general commands manual: AT+QURCCFG="urcport"[,<value>]
        if rest == "=?":
            return Reply(['+QURCCFG: "urcport",("usbat","usbmodem","uart1")'])
        args = args_of(rest[1:]) if rest.startswith("=") else []
        if not args or args[0].lower() != "urcport":
            raise plain_error()
        if len(args) == 1:
            return Reply([f'+QURCCFG: "urcport","{self.urc_port}"'])
        if args[1].lower() not in ("usbat", "usbmodem", "uart1"):
            raise plain_error()
        self.urc_port = args[1].lower()
        return None


class Huawei(ModemCore):
    noise_on: bool

    def _at_curc(self, rest: str) -> Reply | None:
        # Huawei AT interface specification: AT^CURC=0 stops the periodic ^RSSI/^BOOT/^MODE
        # reports, =1 starts them again (gammu sends ^CURC=0 to Huawei sticks).
        if rest == "?":
            return Reply([f"^CURC: {int(self.noise_on)}"])
        if rest == "=?":
            return Reply(["^CURC: (0-1)"])
        args = int_args(rest[1:], count=1) if rest.startswith("=") else []
        if not args or args[0] not in (0, 1):
            raise plain_error()
        self.noise_on = bool(args[0])
        return None

    def _at_portsel(self, rest: str) -> Reply | None:
        # Huawei AT interface specification: AT^PORTSEL=<n> puts URCs on the modem port (0)
        # or on the PCUI port (1), the one drivers talk AT on; gammu sends ^PORTSEL=1.
        if rest == "?":
            return Reply([f"^PORTSEL: {self.urc_port}"])
        if rest == "=?":
            return Reply(["^PORTSEL: (0-1)"])
        args = int_args(rest[1:], count=1) if rest.startswith("=") else []
        if not args or args[0] not in (0, 1):
            raise plain_error()
        self.urc_port = str(args[0])
        return None
