"""Vendor profiles of the virtual modem: what differs from one modem to the next.

``plain`` is a modem that does what TS 27.005 / 27.007 say and nothing more;
the others add what their vendor documents, or what drivers (gammu,
ModemManager, asterisk-chan-quectel…) had to work around, each rule with its
source beside it. A driver that works with every profile works with the
modems they stand for as far as these rules go; what is not listed here is
the plain behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    manufacturer: str = "SIMBRIDGE"
    model: str = "VM-1"
    revision: str = "simbridge-vm 0.1.0"
    # AT+CNMI=? (TS 27.005 §3.4.1); a set value outside these is +CMS ERROR: 303.
    cnmi_ranges: str = "(0-3),(0-3),(0),(0-2),(0,1)"
    cnmi_default: tuple[int, int, int, int, int] = (2, 1, 0, 0, 0)
    # AT+CSMS=? (TS 27.005 §3.2.1).
    csms_values: tuple[int, ...] = (0, 1)
    # <mt>=2,3 and <ds>=1 only with +CSMS=1 (phase 2+), whose +CMT/+CDS the TE
    # must acknowledge with +CNMA (TS 27.005 §3.4.1, §3.4.4).
    phase2plus_needs_csms1: bool = False
    # +CSMS=1: a +CMT/+CDS not acknowledged within this many seconds makes the
    # TA set <mt> and <ds> to 0 (TS 27.005 §3.4.4) and the network try again later.
    ack_timeout: float = 15.0
    strict_cnma: bool = False  # +CNMA with nothing to acknowledge: +CMS ERROR: 340
    boot_word: str = "RDY"  # first line after power-up
    ready_urcs: tuple[str, ...] = ("SMS Ready",)  # once the SIM is ready
    # AT+CPMS=?: memories for reading/deleting and writing (<mem1>, <mem2>), and receiving (<mem3>).
    memories: tuple[str, ...] = ("SM",)
    receive_memories: tuple[str, ...] = ("SM",)
    cpms_default: tuple[str, str, str] = ("SM", "SM", "SM")
    index_base: int = 1  # first storage index
    report_memory: str | None = None  # where <ds>=2 stores a status report (None: <mem3>)
    report_announced: tuple[str, int] | None = None  # what +CDSI says instead of (memory, index)
    empty_read_ok: bool = False  # AT+CMGR of an empty slot: OK without a record (not +CMS ERROR: 321)
    stores_twice: bool = False  # every received SMS is stored (or sent as +CMT) twice
    urc_port_initial: str | None = None  # AT+QURCCFG="urcport" / AT^PORTSEL (None: always here)
    noise_urc: str = "+CIEV: 2,4"  # what the modem says on its own now and then (TS 27.007 §8.10)
    noise_interval: float | None = None  # seconds between noise URCs (None: never on its own)


PLAIN = Profile(name="plain")

QUECTEL_EC25 = Profile(
    name="quectel-ec25",
    manufacturer="Quectel",
    model="EC25",
    revision="EC25EFAR06A10M4G",
    # Quectel EC2x AT Commands Manual, AT+CNMI: mode 0-2, bm 0 or 2.
    cnmi_ranges="(0-2),(0-3),(0,2),(0-2),(0,1)",
    cnmi_default=(2, 1, 0, 0, 0),
    # Quectel manual: after RDY and +CPIN: READY come +QUSIM, +QIND: SMS DONE, +QIND: PB DONE;
    # no "SMS Ready". The AT port's own copy of the ready indication is what drivers wait for
    # (asterisk-chan-quectel, ModemManager's quectel plugin).
    ready_urcs=("+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"),
    memories=("SM", "ME", "MT", "SR"),
    receive_memories=("SM", "ME", "MT"),
    index_base=0,  # Quectel storage indices start at 0 (+CMTI: "SM",0)
    # EC25/EG25 store SMS-STATUS-REPORTs in their own "SR" memory but announce them as
    # +CDSI: "SM",0, and AT+CMGR=0 on SM then answers a bare OK (asterisk-chan-quectel PR #75,
    # firmware EC25EFAR06A10M4G/A15M4G, EG25-G; gammu issue #408 for modems that say "SR").
    report_memory="SR",
    report_announced=("SM", 0),
    empty_read_ok=True,
    # AT+QURCCFG="urcport" routes URCs to "usbat", "usbmodem" or "uart1" (Quectel general
    # commands manual); the value is kept in NV, so a unit another tool set to "usbmodem"
    # sends no +CMTI, RING or +CDS to the AT port until it is set back.
    urc_port_initial="usbmodem",
    noise_urc='+QIND: "csq",21,99',
)

SIMCOM_SIM7600 = Profile(
    name="simcom-sim7600",
    manufacturer="SIMCOM INCORPORATED",
    model="SIMCOM_SIM7600E-H",
    revision="LE20B04SIM7600M22",
    # SIM7500/SIM7600 Series AT Command Manual, AT+CNMI: mode 0-2, bm 0 or 2.
    cnmi_ranges="(0-2),(0-3),(0,2),(0-2),(0,1)",
    # SIMCom manual: "SMS DONE" and "PB DONE" after +CPIN: READY (no "SMS Ready").
    ready_urcs=("SMS DONE", "PB DONE"),
    memories=("SM", "ME", "SR"),
    receive_memories=("SM", "ME"),
    # The A7670E (same SIMCom SMS stack family) stores one received SMS twice, in two slots,
    # with two +CMTI half a second apart, and sends +CMT twice with <mt>=2
    # (LilyGo-Modem-Series issue #155, firmware A011B12A7670M7).
    stores_twice=True,
    noise_urc="+CSQN: 21,99",
)

HUAWEI_E173 = Profile(
    name="huawei-e173",
    manufacturer="huawei",
    model="E173",
    revision="11.126.16.04.00",
    # Huawei HSPA sticks: no <mode> 3 and <bm> 0 or 2 (Huawei's AT command interface
    # specification for its USB sticks; not checked against an E173 unit).
    cnmi_ranges="(0-2),(0-3),(0,2),(0-2),(0,1)",
    ready_urcs=(),  # a Huawei stick says nothing when its SIM is ready; drivers poll +CPIN?
    boot_word="^BOOT:20431979,0,0,0,72",
    # E173: +CPMS=? lists ("ME","MT","SM","SR") for all three (wammu issue #44, E173 log);
    # received messages go to the stick's own memory: +CMTI: "ME",n (gammu issue #126, E1752
    # reading with AT+CPMS="ME","ME"): a driver that reads SM only never sees them.
    memories=("ME", "MT", "SM", "SR"),
    receive_memories=("ME", "MT", "SM", "SR"),
    cpms_default=("SM", "SM", "ME"),
    index_base=0,
    # ^RSSI / ^BOOT / ^MODE are sent unasked every few seconds, also in the middle of other
    # replies, until AT^CURC=0 (Huawei AT interface specification; gammu and ModemManager's
    # huawei plugin filter them).
    noise_urc="^RSSI:21",
    noise_interval=2.0,
    # AT^PORTSEL: URCs on the modem port (0) until set to the PCUI port (1) — gammu's Huawei
    # start-up sends AT^PORTSEL=1 (libgammu atgen, Huawei post-connect).
    urc_port_initial="0",
)

CINTERION_MC75I = Profile(
    name="cinterion-mc75i",
    manufacturer="Cinterion",
    model="MC75i",
    revision="REVISION 02.001",
    # MC75i: +CNMI: (0-3),(0,1),(0,2,3),(0,2),(1) — no +CMT, no +CDS (reports only stored,
    # <ds>=2), <bfr> only 1; +CPMS=? ("ME","SM","MT"),("ME","SM","MT"),("SM","MT") — ME is no
    # receive memory (gammu PR #1207, issue #1206; Siemens MC35i the same, gammu issue #97).
    cnmi_ranges="(0-3),(0,1),(0,2,3),(0,2),(1)",
    cnmi_default=(0, 0, 0, 0, 1),
    boot_word="^SYSSTART",  # Cinterion: ^SYSSTART instead of RDY (MC75i AT command set)
    ready_urcs=(),
    memories=("ME", "SM", "MT"),
    receive_memories=("SM", "MT"),
    cpms_default=("SM", "SM", "SM"),
)

CSMS1 = Profile(
    name="csms1",
    manufacturer="SIMBRIDGE",
    model="VM-2+",
    revision="simbridge-vm phase2+",
    # A phase 2+ modem: <mt>=2,3 and <ds>=1 only with +CSMS=1, and then every +CMT/+CDS
    # must be acknowledged with AT+CNMA (warthog618/modem PR #8, a modem refusing
    # +CNMI=1,2,0,0,0 until +CSMS=1); no stored status reports (<ds> 0,1).
    cnmi_ranges="(0-3),(0-3),(0),(0,1),(0,1)",
    phase2plus_needs_csms1=True,
    strict_cnma=True,
)

PROFILES: dict[str, Profile] = {
    p.name: p for p in (PLAIN, QUECTEL_EC25, SIMCOM_SIM7600, HUAWEI_E173, CINTERION_MC75I, CSMS1)
}
PROFILES["simcom-a7670"] = SIMCOM_SIM7600  # the same SMS stack, and the duplicates were seen there


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown modem profile {name!r} (known: {', '.join(sorted(PROFILES))})") from None
