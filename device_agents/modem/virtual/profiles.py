"""Vendor profiles of the virtual modem: what differs from one modem to the next.

``plain`` is a modem that does what TS 27.005 says and nothing more; the
others add what their vendor's AT manual documents (and what drivers such as
gammu and ModemManager work around), each rule with its source beside it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    manufacturer: str = "SIMBRIDGE"
    model: str = "VM-1"
    revision: str = "simbridge-vm 0.1.0"
    # AT+CNMI=? answer; a set value outside these ranges is refused with +CMS ERROR: 303.
    cnmi_ranges: str = "(0-3),(0-3),(0),(0-2),(0,1)"
    cnmi_default: tuple[int, int, int, int, int] = (2, 1, 0, 0, 0)
    csms_values: tuple[int, ...] = (0, 1)
    strict_cnma: bool = False  # +CNMA with nothing to acknowledge is +CMS ERROR: 340
    ready_urcs: tuple[str, ...] = ("SMS Ready",)  # once the SIM is ready
    memories: tuple[str, ...] = ("SM",)  # what AT+CPMS accepts
    report_memory: str = "SM"  # where a status report is stored (<ds>=2)
    report_memory_announced: str | None = None  # the <mem> +CDSI names, if not the real one


PLAIN = Profile(name="plain")

PROFILES: dict[str, Profile] = {p.name: p for p in (PLAIN,)}


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown modem profile {name!r} (known: {', '.join(sorted(PROFILES))})") from None
