"""A virtual GSM modem on a real pseudo-terminal.

It speaks the AT subset of docs/modem.md (TS 27.007 / 27.005, PDU mode) on
the master side of ``os.openpty()``; drivers open the slave (``/dev/pts/N``,
or the ``link`` symlink to it) exactly as they would a USB modem — pyserial,
gammu, minicom. One concern per module:

- ``modem``: the assembled :class:`VirtualModem`, its life cycle and control API;
- ``commands``: bytes → command lines and PDUs → replies; the dispatch table;
- ``state``: settings (echo, CMGF, CNMI, CSMS…) and the SIM's PIN;
- ``storage``: message memories (SM, ME, SR) and CPMS/CMGL/CMGR/CMGD;
- ``network``: SMS to and from the radio (CMGS/CMGW/CMSS, +CMT/+CMTI/+CDS/+CDSI);
- ``calls``: the call state as data, RING/+CLIP, ATD/ATA/ATH;
- ``info``: identification and registration;
- ``faults``: garbage, reboot, unplug, slowness;
- ``profiles``: what differs from one vendor's modem to the next;
- ``pty``: the pseudo-terminal and the control socket.
"""

from .calls import CALL_TRANSITIONS, CallState
from .commands import split_command_line
from .modem import VirtualModem
from .profiles import PROFILES, Profile, profile_named
from .pty import PtyPort
from .records import CallRecord, StoredMessage, Transmission
from .state import SimCard

__all__ = [
    "CALL_TRANSITIONS",
    "PROFILES",
    "CallRecord",
    "CallState",
    "Profile",
    "PtyPort",
    "SimCard",
    "StoredMessage",
    "Transmission",
    "VirtualModem",
    "profile_named",
    "split_command_line",
]
