"""One opened modem: commands to it, the reset sequence, and its set-up
(echo off, numeric errors, SIM PIN, PDU mode, storage, indications).

What is set is chosen from what the modem says it can do, not tried blind:

- ``AT+CPMS=?``: SIM storage ("SM") for reading, writing and receiving when
  offered, else the first memory offered; every one of SM, ME and SR that can
  be read is polled (Huawei sticks receive into ME, Quectel stores status
  reports in SR).
- ``AT+CSMS=?`` and ``AT+CNMI=?``: service 0 (no acknowledgements) with
  ``<mt>``=1 (stored, +CMTI: the SMS survives until the bridge has it),
  ``<ds>``=1 (+CDS, or 2 stored, +CDSI), ``<mode>`` 2, ``<bfr>`` 0, within the
  ranges offered (gammu's atgen_setcnmi does the same since PR #1207). Only if
  no status-report routing is allowed in service 0 and service 1 is offered is
  ``AT+CSMS=1`` chosen: then every +CMT/+CDS is acknowledged with ``AT+CNMA``
  (TS 27.005 §3.4.4), or the modem stops routing them.
- Vendor set-up for what would hide URCs from this port: Quectel's
  ``AT+QURCCFG="urcport","usbat"``, Huawei's ``AT^PORTSEL=1`` and ``AT^CURC=0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from .at import parse_args
from .durable import ModemJournal, pin_hash
from .serial_link import CommandError, CommandTimeout, LinkError, LinkLost, Reply, SerialLink
from .settings import ModemSettings, NotReady, Parked

READABLE = ("SM", "ME", "SR")  # memories read one by one ("MT" is SM and ME together)


def parse_ranges(text: str) -> list[set[int]]:
    """``(0-3),(0,1),(0,2,3),(0,2),(1)`` → the allowed values of each parameter."""
    out: list[set[int]] = []
    for group in text.replace(" ", "").split("),("):
        allowed: set[int] = set()
        for item in group.strip("()").split(","):
            lo, _, hi = item.partition("-")
            if lo.isdigit() and (not hi or hi.isdigit()):
                allowed.update(range(int(lo), int(hi or lo) + 1))
        out.append(allowed)
    return out


def cnmi_candidates(ranges: list[set[int]] | None, *, reports: bool) -> list[tuple[int, int, int, int, int]]:
    """CNMI settings to try, best first, within ``ranges`` (all of TS 27.005's when unknown)."""
    prefs = [
        [2, 1, 3],  # <mode>: buffer while busy, else at once
        [1, 2, 3],  # <mt>: stored with +CMTI first (the SIM keeps it until the bridge acks)
        [0],  # <bm>: no cell broadcast
        [1, 2, 0] if reports else [0],  # <ds>: +CDS, else stored with +CDSI
        [0, 1],  # <bfr>
    ]
    if ranges is not None and len(ranges) >= 5:
        prefs = [[v for v in p if not r or v in r] or sorted(r)[:1] for p, r in zip(prefs, ranges, strict=False)]
    ranked = itertools.product(*(list(enumerate(p)) for p in prefs))
    # <mt> matters most, then <ds>, then <mode>, then <bfr>
    order = sorted(ranked, key=lambda c: (c[1][0], c[3][0], c[0][0], c[4][0]))
    return [(c[0][1], c[1][1], c[2][1], c[3][1], c[4][1]) for c in order][:12]


@dataclass(slots=True)
class Routing:
    """What the set-up chose."""

    cnmi: tuple[int, int, int, int, int] | None = None
    csms: int = 0
    read_memories: tuple[str, ...] = ("SM",)

    @property
    def acks(self) -> bool:
        """+CSMS=1: every +CMT/+CDS needs AT+CNMA."""
        return self.csms == 1

    @property
    def cnmi_text(self) -> str:
        return ",".join(map(str, self.cnmi)) if self.cnmi else ""


class ModemSession:
    def __init__(self, *, link: SerialLink, settings: ModemSettings, journal: ModemJournal,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.link = link
        self.settings = settings
        self.journal = journal
        self.log = log
        self.model = ""
        self.manufacturer = ""
        self.routing = Routing()
        self._memory = ""  # <mem1> selected now
        self._reset_lock = asyncio.Lock()

    # -- commands ------------------------------------------------------------------------

    async def cmd(self, command: str, **kw: Any) -> Reply:
        """One command; a timeout runs the reset sequence before it is raised."""
        try:
            return await self.link.command(command, **kw)
        except CommandTimeout as exc:
            try:
                await self.reset(str(exc))
            except LinkError as gone:
                gone.uncertain = exc.uncertain  # whether a PDU was written stays known
                raise
            raise

    async def try_(self, command: str, **kw: Any) -> Reply | None:
        """A command whose error is not fatal: None when the modem refuses it."""
        try:
            return await self.cmd(command, **kw)
        except CommandError as exc:
            self.log.debug("modem refused %s: %s", command, exc.final.text)
            return None

    async def probe(self, tries: int) -> None:
        last: Exception | None = None
        for _ in range(tries):
            try:
                await self.link.command("AT", timeout=min(2.0, self.settings.command_timeout), retry_busy=False)
                return
            except CommandError:
                return  # it answers: good enough
            except CommandTimeout as exc:
                last = exc
                with contextlib.suppress(LinkError):
                    await self.link.write_raw(b"\x1b\r")
        raise LinkLost(f"no answer to AT ({last})")

    async def reset(self, why: str) -> None:
        """The reset sequence after a command timed out: abort any PDU entry,
        probe, and configure the modem again (it may have rebooted). A modem
        that stays silent is treated as gone: the port is closed and reopened."""
        if self._reset_lock.locked():
            return
        async with self._reset_lock:
            self.log.warning("modem did not answer (%s): resetting", why)
            try:
                await self.link.write_raw(b"\x1b\r")
                await self.probe(3)
                await self.configure()
            except LinkError as exc:
                err = LinkLost(f"modem silent after a reset: {exc}")
                self.link.fail(err)
                raise err from exc

    # -- set-up --------------------------------------------------------------------------

    async def init(self) -> None:
        with contextlib.suppress(LinkError):
            await self.link.write_raw(b"\x1b\r")  # abort a PDU entry a previous run left open
        await self.probe(self.settings.probe_tries)
        await self.configure()

    async def configure(self) -> None:
        await self.cmd("ATE0")
        await self.cmd("AT+CMEE=1")
        await self.unlock()
        if not self.model:
            reply = await self.try_("AT+CGMI")
            self.manufacturer = reply.lines[0] if reply and reply.lines else ""
            reply = await self.try_("AT+CGMM")
            self.model = reply.lines[0] if reply and reply.lines else ""
        await self.cmd("AT+CMGF=0")
        await self._vendor_setup()
        await self._storage()
        await self.set_routing()
        if await self.try_("AT+CLIP=1") is None:
            self.log.warning("modem refused AT+CLIP=1: callers' numbers unknown")
        await self.try_("AT+COPS=3,0")
        if self.settings.smsc:
            toa = 145 if self.settings.smsc.startswith("+") else 129
            await self.cmd(f'AT+CSCA="{self.settings.smsc}",{toa}')

    async def _vendor_setup(self) -> None:
        maker = self.manufacturer.lower()
        if "quectel" in maker:
            # URCs to this (AT) port, not the modem port or the UART (Quectel AT+QURCCFG).
            reply = await self.try_('AT+QURCCFG="urcport"')
            if reply is not None and not any("usbat" in line.lower() for line in reply.lines):
                self.log.warning("the modem sent its URCs elsewhere (%s); routing them here",
                                 " ".join(reply.lines))
                await self.try_('AT+QURCCFG="urcport","usbat"')
        elif "huawei" in maker:
            await self.try_("AT^PORTSEL=1")  # URCs on the PCUI (AT) port, as gammu does
            await self.try_("AT^CURC=0")  # no periodic ^RSSI/^BOOT/^MODE noise

    async def _storage(self) -> None:
        reply = await self.try_("AT+CPMS=?")
        lists: list[list[str]] = []
        if reply is not None and reply.info("+CPMS:"):
            text = reply.info("+CPMS:")[0].split(":", 1)[1]
            lists = [[m.strip().strip('"').upper() for m in group.strip("() ").split(",") if m.strip()]
                     for group in text.split("),(")]
        read = lists[0] if lists else ["SM"]
        receive = lists[2] if len(lists) >= 3 else read
        mem = "SM" if "SM" in read else (read[0] if read else "SM")
        mem3 = "SM" if "SM" in receive else (receive[0] if receive else mem)
        if await self.try_(f'AT+CPMS="{mem}","{mem}","{mem3}"') is None:
            self.log.warning("modem refused AT+CPMS=\"%s\"; using its default storage", mem)
        self._memory = mem
        readable = [m for m in READABLE if m in read] or [mem]
        self.routing.read_memories = tuple(dict.fromkeys([mem, *readable]))

    async def select(self, mem: str) -> None:
        """Make ``mem`` the memory AT+CMGL/+CMGR/+CMGD work on."""
        if mem != self._memory:
            await self.cmd(f'AT+CPMS="{mem}"')
            self._memory = mem

    async def set_routing(self) -> None:
        """Choose +CSMS and +CNMI from what the modem offers, and set them."""
        reports = self.settings.delivery_reports
        reply = await self.try_("AT+CNMI=?")
        ranges = None
        if reply is not None and reply.info("+CNMI:"):
            ranges = parse_ranges(reply.info("+CNMI:")[0].split(":", 1)[1])
        reply = await self.try_("AT+CSMS=?")
        services = {0}
        if reply is not None and reply.info("+CSMS:"):
            services = parse_ranges(reply.info("+CSMS:")[0].split(":", 1)[1])[0] or {0}
        fallback: tuple[int, tuple[int, int, int, int, int]] | None = None
        for csms in sorted(services & {0, 1}):
            if await self.try_(f"AT+CSMS={csms}") is None and len(services) > 1:
                continue
            for cnmi in cnmi_candidates(ranges, reports=reports):
                if await self.try_("AT+CNMI=" + ",".join(map(str, cnmi))) is not None:
                    break
            else:
                continue
            if cnmi[3] != 0 or not reports:
                self.routing.cnmi, self.routing.csms = cnmi, csms
                return
            fallback = fallback or (csms, cnmi)
        if fallback is not None:
            csms, cnmi = fallback
            await self.try_(f"AT+CSMS={csms}")
            await self.try_("AT+CNMI=" + ",".join(map(str, cnmi)))
            self.routing.cnmi, self.routing.csms = cnmi, csms
            self.log.warning("the modem routes no status reports: delivery reports will not come")
            return
        self.routing.cnmi = None
        self.log.warning("modem refused every AT+CNMI: incoming SMS are found by polling only")

    async def routing_intact(self) -> bool:
        """AT+CNMI? still what was set (a modem may reset it: a reboot, or +CSMS=1's
        missed acknowledgement, TS 27.005 §3.4.4)."""
        if self.routing.cnmi is None:
            return True
        reply = await self.try_("AT+CNMI?")
        if reply is None or not reply.info("+CNMI:"):
            return True
        now = tuple(int(a) if a.isdigit() else 0 for a in parse_args(reply.info("+CNMI:")[0]))
        return now[:5] == self.routing.cnmi

    async def unlock(self) -> None:
        pin = self.settings.pin
        memory = self.journal.memory
        for _ in range(20):
            try:
                reply = await self.cmd("AT+CPIN?")
            except CommandError as exc:
                if exc.is_cme(10, 13, 15):
                    raise NotReady(f"SIM not usable: {exc.final.text}") from None
                raise
            lines = reply.info("+CPIN:")
            code = lines[0].split(":", 1)[1].strip().strip('"').upper() if lines else "READY"
            if code == "READY":
                return
            if code != "SIM PIN":
                raise Parked(f"the SIM needs {code}; simbridge only enters a PIN (pin in the config)")
            if not pin:
                raise Parked("the SIM asks for its PIN and no pin is configured for this modem")
            if memory.bad_pin == pin_hash(pin):
                raise Parked("the configured PIN was refused by this SIM before; not trying it again "
                             "(each try uses up one of the SIM's few attempts)")
            try:
                await self.cmd(f'AT+CPIN="{pin}"', retry_busy=False)
            except CommandError as exc:
                memory.bad_pin = pin_hash(pin)
                self.journal.save()
                raise Parked(f"the SIM refused the configured PIN ({exc.final.text}); "
                             "not trying again") from None
            self.log.info("SIM unlocked")
            await asyncio.sleep(0.1)  # the SIM initialises; AT+CPIN? says when it is ready
        raise NotReady("the SIM never became ready")
