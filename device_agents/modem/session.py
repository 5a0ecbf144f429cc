"""One opened modem: commands to it, the reset sequence, and its set-up
(echo off, numeric errors, SIM PIN, PDU mode, storage, indications)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .durable import ModemJournal, pin_hash
from .serial_link import CommandError, CommandTimeout, LinkError, LinkLost, Reply, SerialLink
from .settings import ModemSettings, NotReady, Parked


class ModemSession:
    def __init__(self, *, link: SerialLink, settings: ModemSettings, journal: ModemJournal,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.link = link
        self.settings = settings
        self.journal = journal
        self.log = log
        self.model = ""
        self._reset_lock = asyncio.Lock()

    # -- commands ------------------------------------------------------------------------

    async def cmd(self, command: str, **kw: Any) -> Reply:
        """One command; a timeout runs the reset sequence before it is raised."""
        try:
            return await self.link.command(command, **kw)
        except CommandTimeout as exc:
            await self.reset(str(exc))
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
            reply = await self.try_("AT+CGMM")
            self.model = reply.lines[0] if reply and reply.lines else ""
        await self.cmd("AT+CMGF=0")
        if await self.try_('AT+CPMS="SM","SM","SM"') is None:
            self.log.warning("modem refused SIM storage (AT+CPMS); using its default")
        for cnmi in ("AT+CNMI=2,1,0,1,0", "AT+CNMI=2,1,0,2,0", "AT+CNMI=1,1,0,1,0"):
            if await self.try_(cnmi) is not None:
                break
        else:
            self.log.warning("modem refused every AT+CNMI: incoming SMS are found by polling only")
        if await self.try_("AT+CLIP=1") is None:
            self.log.warning("modem refused AT+CLIP=1: callers' numbers unknown")
        await self.try_("AT+COPS=3,0")
        if self.settings.smsc:
            toa = 145 if self.settings.smsc.startswith("+") else 129
            await self.cmd(f'AT+CSCA="{self.settings.smsc}",{toa}')

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
