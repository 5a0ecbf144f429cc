"""SMS PDU codec: SMS-SUBMIT, SMS-DELIVER and SMS-STATUS-REPORT.

3GPP TS 23.040 section 9.2 (TPDU layouts), TS 23.038 (alphabets, DCS) and
TS 24.011 section 8.2.5.2 (the SMSC address in front). Sans-I/O: bytes or hex
in, frozen dataclasses out, and back.

A "PDU" here is what AT commands in PDU mode (TS 27.005) carry: the SMSC
address octets ("00" when there is none) followed by the TPDU. ``AT+CMGS=<n>``
wants the TPDU length, which :class:`SubmitPart` gives as ``tpdu_length``.

Errors are split the h11 way: a malformed PDU from the peer raises
:class:`PduError` (a ``ValueError``) saying what is wrong; misuse of the
encoders (a naive datetime, a text too long for one DELIVER, a number with
letters) raises a plain ``ValueError``. Anything else escaping :func:`decode`
is a bug.

Decoding is strict about structure (lengths, BCD digits, dates, trailing
octets after TP-UD) and lenient about content, as TS 23.038 asks of
receivers:

- an unknown GSM-7 escape decodes as a space, reserved DCS values as GSM-7;
- 8-bit data decodes to text as latin-1 (one character per octet, lossless);
  the raw octets stay in ``data``; compressed data (DCS bit 5) is passed on
  the same way, undecompressed;
- UCS-2 that is not valid UTF-16 (an odd octet, a lone surrogate, e.g. a
  surrogate pair split across parts by the sender) decodes with U+FFFD;
  :func:`reassemble` joins the raw payloads first, so such splits come out
  whole;
- a concatenation IE with seq 0 or seq > total is ignored (TS 23.040
  section 9.2.3.24.1), as are unknown IEs;
- the optional parameters after TP-ST in a status report are ignored;
- an alphanumeric address whose length is given as twice its octet count
  (a common network quirk) loses the one padding '@' it would decode to.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from device_agents.modem import gsm7
from device_agents.modem.gsm7 import GSM7, UCS2

__all__ = [
    "EIGHT_BIT",
    "GSM7",
    "UCS2",
    "Concat",
    "Deliver",
    "PduError",
    "StatusReport",
    "Submit",
    "SubmitPart",
    "decode",
    "encode_deliver",
    "encode_status_report",
    "encode_submit",
    "reassemble",
    "status_of",
]

EIGHT_BIT = "8bit"

# First-octet bits (TS 23.040 section 9.2.3).
MTI_DELIVER = 0x00
MTI_SUBMIT = 0x01
MTI_STATUS_REPORT = 0x02
MMS_NO_MORE = 0x04  # TP-MMS in DELIVER / STATUS-REPORT: no more messages waiting
VPF_RELATIVE = 0x10  # TP-VPF = 10 in SUBMIT
SRR = 0x20  # TP-SRR in SUBMIT
UDHI = 0x40  # TP-UDHI

# Type of address (TS 23.040 section 9.1.2.5).
TOA_INTERNATIONAL = 0x91
TOA_UNKNOWN = 0x81
TOA_ALPHANUMERIC = 0xD0
TON_INTERNATIONAL = 1
TON_ALPHANUMERIC = 5

MAX_DIGITS = 20
MAX_ALPHA_SEPTETS = 11
MAX_UD_OCTETS = 140

# TP-DCS for each alphabet, general data coding group, no class (TS 23.038 section 4).
_DCS = {GSM7: 0x00, EIGHT_BIT: 0x04, UCS2: 0x08}

# Semi-octet digits (TS 23.040 section 9.1.2.3); 0xF is the filler.
_BCD = "0123456789*#abc"
_BCD_VALUE = {c: i for i, c in enumerate(_BCD)}
_NUMBER = re.compile(rf"\+?[0-9*#]{{1,{MAX_DIGITS}}}")

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08


class PduError(ValueError):
    """A malformed PDU: bad hex, truncated, a bad length or field value."""


# --------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenated-SMS information element (TS 23.040 9.2.3.24.1 / .8)."""

    ref: int
    total: int
    seq: int


@dataclass(frozen=True, slots=True)
class SubmitPart:
    """One SMS-SUBMIT to send: ``AT+CMGS=<tpdu_length>`` then ``hex``."""

    pdu: bytes  # SMSC address octets + TPDU
    tpdu_length: int  # octets after the SMSC address: what AT+CMGS wants
    seq: int = 1
    total: int = 1

    @property
    def hex(self) -> str:
        return self.pdu.hex().upper()


@dataclass(frozen=True, slots=True)
class Deliver:
    """An SMS-DELIVER (TS 23.040 section 9.2.2.1): an incoming SMS."""

    sender: str  # "+33612345678", "0612345678" or alphanumeric "InfoSMS"
    text: str
    encoding: str  # GSM7 | EIGHT_BIT | UCS2
    timestamp: datetime  # TP-SCTS, aware, in the PDU's own zone
    smsc: str | None = None
    concat: Concat | None = None
    udh: bytes = b""  # raw user data header, UDHL octet included; b"" if none
    data: bytes = b""  # payload after the UDH: septet values / octets / UTF-16-BE
    pid: int = 0
    dcs: int = 0

    @property
    def number(self) -> str:
        return self.sender


@dataclass(frozen=True, slots=True)
class Submit:
    """An SMS-SUBMIT (TS 23.040 section 9.2.2.2): an outgoing SMS."""

    recipient: str
    text: str
    encoding: str
    reference: int = 0  # TP-MR
    request_report: bool = False  # TP-SRR
    validity: timedelta | datetime | None = None  # relative or absolute TP-VP
    smsc: str | None = None
    concat: Concat | None = None
    udh: bytes = b""
    data: bytes = b""
    pid: int = 0
    dcs: int = 0

    @property
    def number(self) -> str:
        return self.recipient


@dataclass(frozen=True, slots=True)
class StatusReport:
    """An SMS-STATUS-REPORT (TS 23.040 section 9.2.2.3): the fate of a SUBMIT."""

    reference: int  # TP-MR of the SUBMIT it reports on
    recipient: str  # TP-RA
    scts: datetime  # when the SC received the SUBMIT
    discharge: datetime  # TP-DT: when the status below was reached
    status_code: int  # TP-ST
    smsc: str | None = None

    @property
    def status(self) -> str:
        return status_of(self.status_code)

    @property
    def number(self) -> str:
        return self.recipient


def status_of(status_code: int) -> str:
    """"delivered", "pending" or "failed" for a TP-ST (TS 23.040 9.2.3.15).

    0x00-0x1F transaction completed; 0x20-0x3F temporary error, SC still
    trying; 0x40-0x7F permanent error, or temporary and SC no longer trying.
    Reserved values (0x80 and up) are failures.
    """
    if status_code <= 0x1F:
        return "delivered"
    if status_code <= 0x3F:
        return "pending"
    return "failed"


# --------------------------------------------------------------------------
# Reading


class _Reader:
    """A cursor over a PDU; every read checks the length (PduError if short)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        left = len(self.data) - self.pos
        if n > left:
            raise PduError(
                f"truncated: {what} needs {n} octet(s) at offset {self.pos}, {left} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def octet(self, what: str) -> int:
        return self.take(1, what)[0]

    def peek(self, what: str) -> int:
        octet = self.octet(what)
        self.pos -= 1
        return octet

    def finish(self, after: str) -> None:
        left = len(self.data) - self.pos
        if left:
            raise PduError(f"bad length: {left} trailing octet(s) after {after}")


def _to_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, str):
        raise TypeError(f"PDU must be bytes or a hex string, not {type(data).__name__}")
    digits = "".join(data.split())
    if len(digits) % 2:
        raise PduError(f"bad hex: odd number of hex digits ({len(digits)})")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        bad = next((c for c in digits if c not in "0123456789abcdefABCDEF"), "?")
        raise PduError(f"bad hex: {bad!r} is not a hex digit") from None


# --------------------------------------------------------------------------
# Addresses (TS 23.040 section 9.1.2.5, TS 24.011 section 8.2.5.2)


def _encode_bcd(digits: str) -> bytes:
    """Semi-octets, first digit in the low nibble, 0xF filler if odd."""
    nibbles = [_BCD_VALUE[c] for c in digits] + [0xF] * (len(digits) % 2)
    return bytes(lo | hi << 4 for lo, hi in zip(nibbles[::2], nibbles[1::2], strict=True))


def _decode_bcd(raw: bytes, count: int, what: str) -> str:
    nibbles = [n for b in raw for n in (b & 0x0F, b >> 4)][:count]
    if 0xF in nibbles:
        raise PduError(f"bad {what}: filler digit F inside the number")
    return "".join(_BCD[n] for n in nibbles)


def _format_number(toa: int, digits: str) -> str:
    international = (toa >> 4) & 0x07 == TON_INTERNATIONAL
    return "+" + digits if international and digits else digits


def _parse_number(number: str, what: str) -> tuple[int, str]:
    """(type of address, digits) for "+<digits>" (0x91) or "<digits>" (0x81)."""
    if not isinstance(number, str) or not _NUMBER.fullmatch(number):
        raise ValueError(
            f"{what} must be 1 to {MAX_DIGITS} digits (0-9 * #) with an optional leading +"
        )
    if number.startswith("+"):
        return TOA_INTERNATIONAL, number[1:]
    return TOA_UNKNOWN, number


def _encode_address(number: str, what: str, *, allow_alpha: bool = False) -> bytes:
    """TP-OA / TP-DA / TP-RA: length in semi-octets, TOA, value."""
    if allow_alpha and isinstance(number, str) and not _NUMBER.fullmatch(number):
        return _encode_alpha_address(number, what)
    toa, digits = _parse_number(number, what)
    return bytes([len(digits), toa]) + _encode_bcd(digits)


def _encode_alpha_address(name: str, what: str) -> bytes:
    """Alphanumeric address: packed GSM-7, length = useful semi-octets."""
    if not name or not gsm7.is_gsm7(name):
        raise ValueError(f"alphanumeric {what} must be non-empty GSM 7-bit text")
    septets = gsm7.to_septets(name)
    if len(septets) > MAX_ALPHA_SEPTETS:
        raise ValueError(f"alphanumeric {what} is longer than {MAX_ALPHA_SEPTETS} septets")
    semi_octets = -(-7 * len(septets) // 4)
    return bytes([semi_octets, TOA_ALPHANUMERIC]) + gsm7.pack_septets(septets)


def _read_address(r: _Reader, what: str) -> str:
    count = r.octet(f"{what} length")
    toa = r.octet(f"{what} type")
    raw = r.take((count + 1) // 2, what)
    if (toa >> 4) & 0x07 == TON_ALPHANUMERIC:
        return _decode_alpha(raw, count)
    return _format_number(toa, _decode_bcd(raw, count, what))


def _decode_alpha(raw: bytes, count: int) -> str:
    septets = gsm7.unpack_septets(raw, count * 4 // 7)
    # A length of 2 x octets instead of the useful semi-octets is harmless
    # except for 7 septets (49 bits in 7 octets): read as 14 semi-octets it
    # gives an 8th septet made of the zero padding, an '@'.
    if count == 2 * len(raw) and count * 4 % 7 == 0 and septets and septets[-1] == 0:
        septets.pop()
    return gsm7.from_septets(septets)


def _encode_smsc(smsc: str | None) -> bytes:
    """SMSC address as AT+CMGS takes it: octet count, TOA, BCD; or "00"."""
    if not smsc:
        return b"\x00"
    toa, digits = _parse_number(smsc, "smsc")
    body = bytes([toa]) + _encode_bcd(digits)
    return bytes([len(body)]) + body


def _read_smsc(r: _Reader) -> str | None:
    size = r.octet("SMSC address length")
    if size == 0:
        return None
    raw = r.take(size, "SMSC address")
    nibbles = [n for b in raw[1:] for n in (b & 0x0F, b >> 4)]
    while nibbles and nibbles[-1] == 0xF:
        nibbles.pop()
    digits = _decode_bcd(raw[1:], len(nibbles), "SMSC address")
    return _format_number(raw[0], digits) or None


# --------------------------------------------------------------------------
# Time stamps (TS 23.040 section 9.2.3.11) and validity (9.2.3.12)


def _swap(value: int) -> int:
    """Two decimal digits as one semi-octet pair: "41" -> 0x14."""
    return (value % 10) << 4 | value // 10


def _unswap(octet: int, what: str) -> int:
    lo, hi = octet & 0x0F, octet >> 4
    if lo > 9 or hi > 9:
        raise PduError(f"bad {what}: {octet:02X} is not two decimal digits")
    return lo * 10 + hi


def _encode_timestamp(ts: datetime, what: str) -> bytes:
    """YY MM DD hh mm ss TZ; TZ in quarter hours, sign in bit 3 (TS 23.040 9.2.3.11)."""
    offset = ts.utcoffset() if isinstance(ts, datetime) else None
    if offset is None:
        raise ValueError(f"{what} must be an aware datetime")
    quarters, rest = divmod(offset, timedelta(minutes=15))
    if rest or abs(quarters) > 79:
        raise ValueError(f"{what} zone must be whole quarter hours within ±19:45")
    if not 2000 <= ts.year <= 2099:
        raise ValueError(f"{what} year must be 2000-2099 (two digits on the air)")
    fields = (ts.year % 100, ts.month, ts.day, ts.hour, ts.minute, ts.second)
    zone = _swap(abs(quarters)) | (0x08 if quarters < 0 else 0)
    return bytes(_swap(v) for v in fields) + bytes([zone])


def _read_timestamp(r: _Reader, what: str) -> datetime:
    raw = r.take(7, what)
    year, month, day, hour, minute, second = (_unswap(b, what) for b in raw[:6])
    quarters = _unswap(raw[6] & 0xF7, what)
    if raw[6] & 0x08:
        quarters = -quarters
    zone = timezone(timedelta(minutes=15 * quarters))
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError as exc:
        raise PduError(f"bad {what}: {exc}") from None


def _vp_duration(vp: int) -> timedelta:
    """Relative TP-VP octet to a duration (TS 23.040 section 9.2.3.12.1)."""
    if vp <= 143:
        return timedelta(minutes=5 * (vp + 1))
    if vp <= 167:
        return timedelta(hours=12, minutes=30 * (vp - 143))
    if vp <= 196:
        return timedelta(days=vp - 166)
    return timedelta(weeks=vp - 192)


_VP_DURATIONS = [_vp_duration(vp) for vp in range(256)]


def _vp_octet(validity: timedelta) -> int:
    """The shortest relative TP-VP at least ``validity`` long (5 minutes to
    63 weeks; longer is capped at 63 weeks)."""
    if validity <= timedelta(0):
        raise ValueError("validity must be positive")
    return min(bisect_left(_VP_DURATIONS, validity), 255)


def _read_validity(r: _Reader, vpf: int) -> timedelta | datetime | None:
    """TP-VP by TP-VPF: none, relative, absolute; enhanced is skipped (None)."""
    if vpf == 0b10:
        return _vp_duration(r.octet("TP-VP"))
    if vpf == 0b11:
        return _read_timestamp(r, "TP-VP")
    if vpf == 0b01:
        r.take(7, "TP-VP (enhanced format)")
    return None


# --------------------------------------------------------------------------
# User data (TS 23.040 section 9.2.3.24, TS 23.038 section 4 and 6.1.2)


def _alphabet(dcs: int) -> str:
    """The alphabet a TP-DCS selects (TS 23.038 section 4); reserved -> GSM7."""
    group = dcs >> 4
    if group <= 0x7:  # general data coding, or automatic deletion
        if dcs & 0x20:  # compressed: passed on as raw octets
            return EIGHT_BIT
        return (GSM7, EIGHT_BIT, UCS2, GSM7)[(dcs >> 2) & 0x03]
    if group == 0xE:
        return UCS2
    if group == 0xF:
        return EIGHT_BIT if dcs & 0x04 else GSM7
    return GSM7


def _header_septets(udh_octets: int) -> tuple[int, int]:
    """(septets the UDH occupies, fill bits) for 7-bit user data."""
    fill = (-8 * udh_octets) % 7
    return (8 * udh_octets + fill) // 7, fill


def _encode_user_data(text: str, encoding: str, udh: bytes) -> tuple[int, bytes]:
    """(TP-UDL, TP-UD) for ``text`` after ``udh`` (UDHL included, or b"")."""
    if encoding == GSM7:
        septets = gsm7.to_septets(text)
        header, fill = _header_septets(len(udh))
        udl = header + len(septets)
        if udl > gsm7.SINGLE_LIMIT[GSM7]:
            raise ValueError(f"text needs {udl} septets, more than one SMS holds (160)")
        return udl, udh + gsm7.pack_septets(septets, shift=fill)
    try:
        body = text.encode("utf-16-be" if encoding == UCS2 else "latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text cannot be encoded as {encoding}: {exc.reason}") from None
    ud = udh + body
    if len(ud) > MAX_UD_OCTETS:
        raise ValueError(f"user data is {len(ud)} octets, more than one SMS holds (140)")
    return len(ud), ud


def _concat_udh(concat: Concat, *, ref16: bool = False) -> bytes:
    """UDH with one concatenation IE: 8-bit (0x00) or 16-bit (0x08) reference."""
    if not 1 <= concat.seq <= concat.total <= 255:
        raise ValueError("concat needs 1 <= seq <= total <= 255")
    if not 0 <= concat.ref <= (0xFFFF if ref16 else 0xFF):
        raise ValueError(f"concat ref must fit {'16' if ref16 else '8'} bits")
    ie = bytes([IEI_CONCAT_16, 4]) + concat.ref.to_bytes(2, "big") if ref16 else bytes([IEI_CONCAT_8, 3, concat.ref])
    ie += bytes([concat.total, concat.seq])
    return bytes([len(ie)]) + ie


def _split_ies(body: bytes) -> list[tuple[int, bytes]]:
    """(IEI, value) pairs of a UDH body; PduError if one overruns it."""
    ies, i = [], 0
    while i < len(body):
        if i + 2 > len(body):
            raise PduError("bad user data header: truncated information element")
        iei, size = body[i], body[i + 1]
        if i + 2 + size > len(body):
            raise PduError(f"bad user data header: IE {iei:02X} length {size} overruns the header")
        ies.append((iei, body[i + 2 : i + 2 + size]))
        i += 2 + size
    return ies


def _find_concat(udh: bytes) -> Concat | None:
    for iei, value in _split_ies(udh[1:]):
        if iei == IEI_CONCAT_8 and len(value) == 3:
            ref, total, seq = value
        elif iei == IEI_CONCAT_16 and len(value) == 4:
            ref, total, seq = int.from_bytes(value[:2], "big"), value[2], value[3]
        else:
            continue
        if 1 <= seq <= total:
            return Concat(ref, total, seq)
    return None


def _read_udh(ud: bytes) -> bytes:
    """The UDH at the start of TP-UD, UDHL octet included."""
    if not ud:
        raise PduError("bad user data header: TP-UDHI is set but TP-UD is empty")
    end = 1 + ud[0]
    if end > len(ud):
        raise PduError(f"bad user data header: UDHL {ud[0]} overruns TP-UD ({len(ud)} octets)")
    return ud[:end]


def _payload_text(data: bytes, encoding: str) -> str:
    """Text of a payload as kept in ``data`` (septet values for GSM7)."""
    if encoding == GSM7:
        return gsm7.from_septets(data)
    if encoding == UCS2:
        return data.decode("utf-16-be", "replace")
    return data.decode("latin-1")


@dataclass(frozen=True, slots=True)
class _UserData:
    text: str
    encoding: str
    udh: bytes
    data: bytes
    concat: Concat | None


def _read_user_data(r: _Reader, dcs: int, has_udh: bool) -> _UserData:
    """TP-UDL and TP-UD: UDL counts septets for GSM7, octets otherwise,
    the UDH (and its fill bits) included."""
    encoding = _alphabet(dcs)
    udl = r.octet("TP-UDL")
    ud = r.take(-(-udl * 7 // 8) if encoding == GSM7 else udl, "TP-UD")
    udh = _read_udh(ud) if has_udh else b""
    concat = _find_concat(udh) if udh else None
    if encoding == GSM7:
        header, fill = _header_septets(len(udh))
        if header > udl:
            raise PduError(f"bad TP-UDL: {udl} septets is shorter than the user data header")
        data = bytes(gsm7.unpack_septets(ud[len(udh) :], udl - header, shift=fill))
    else:
        data = ud[len(udh) :]
    return _UserData(_payload_text(data, encoding), encoding, udh, data, concat)


# --------------------------------------------------------------------------
# SMS-SUBMIT (TS 23.040 section 9.2.2.2)


def encode_submit(
    number: str,
    text: str,
    *,
    smsc: str | None = None,
    request_report: bool = False,
    validity: timedelta | None = None,
    reference: int = 0,
    concat_ref: int | None = None,
    force_ucs2: bool = False,
    ref16: bool = False,
) -> list[SubmitPart]:
    """SMS-SUBMIT PDUs for ``text``, one per part, as AT+CMGS takes them.

    GSM 7-bit (extension table included) when the text allows, else UCS-2.
    A text longer than one SMS is split on character boundaries (see
    :func:`gsm7.split_text`) and each part carries a concatenation UDH with
    reference ``concat_ref`` (8-bit, or 16-bit with ``ref16``). Pass a
    rolling counter as ``concat_ref``; None derives one from number and text.
    ``validity`` becomes a relative TP-VP, rounded up to the next value the
    format can express. TP-MR is ``reference`` in every part (modems
    usually assign their own and answer it in ``+CMGS: <mr>``).
    """
    encoding = gsm7.pick_encoding(text, force_ucs2=force_ucs2)
    chunks = gsm7.split_text(text, encoding, udh_octets=7 if ref16 else 6)
    total = len(chunks)
    if total > 255:
        raise ValueError(f"text needs {total} parts, more than 255")
    if concat_ref is None:
        concat_ref = zlib.crc32(f"{number}\x00{text}".encode()) & (0xFFFF if ref16 else 0xFF)
    sca = _encode_smsc(smsc)
    head = _submit_head(number, reference, request_report, validity, encoding)
    parts = []
    for seq, chunk in enumerate(chunks, 1):
        udh = _concat_udh(Concat(concat_ref, total, seq), ref16=ref16) if total > 1 else b""
        tpdu = _submit_tpdu(head, chunk, encoding, udh)
        parts.append(SubmitPart(sca + tpdu, len(tpdu), seq, total))
    return parts


@dataclass(frozen=True, slots=True)
class _SubmitHead:
    first: int  # first octet without TP-UDHI
    fields: bytes  # TP-MR, TP-DA, TP-PID, TP-DCS, TP-VP


def _submit_head(
    number: str, reference: int, request_report: bool, validity: timedelta | None, encoding: str
) -> _SubmitHead:
    if not 0 <= reference <= 255:
        raise ValueError("reference (TP-MR) must be 0-255")
    first = MTI_SUBMIT | (SRR if request_report else 0)
    vp = b""
    if validity is not None:
        first |= VPF_RELATIVE
        vp = bytes([_vp_octet(validity)])
    address = _encode_address(number, "number")
    return _SubmitHead(first, bytes([reference]) + address + bytes([0, _DCS[encoding]]) + vp)


def _submit_tpdu(head: _SubmitHead, text: str, encoding: str, udh: bytes) -> bytes:
    udl, ud = _encode_user_data(text, encoding, udh)
    first = head.first | (UDHI if udh else 0)
    return bytes([first]) + head.fields + bytes([udl]) + ud


def _decode_submit(r: _Reader, smsc: str | None) -> Submit:
    first = r.octet("first octet")
    reference = r.octet("TP-MR")
    recipient = _read_address(r, "TP-DA")
    pid = r.octet("TP-PID")
    dcs = r.octet("TP-DCS")
    validity = _read_validity(r, (first >> 3) & 0x03)
    ud = _read_user_data(r, dcs, bool(first & UDHI))
    r.finish("TP-UD")
    return Submit(
        recipient=recipient,
        text=ud.text,
        encoding=ud.encoding,
        reference=reference,
        request_report=bool(first & SRR),
        validity=validity,
        smsc=smsc,
        concat=ud.concat,
        udh=ud.udh,
        data=ud.data,
        pid=pid,
        dcs=dcs,
    )


# --------------------------------------------------------------------------
# SMS-DELIVER (TS 23.040 section 9.2.2.1)


def encode_deliver(
    sender: str,
    text: str,
    *,
    timestamp: datetime,
    smsc: str | None = None,
    concat: Concat | tuple[int, int, int] | None = None,
    ref16: bool = False,
    encoding: str | None = None,
) -> bytes:
    """One SMS-DELIVER PDU (SMSC octets included), as a modem shows it.

    ``sender`` is a number ("+33612345678" international, "0612345678"
    national/unknown) or alphanumeric ("InfoSMS", packed 7-bit, at most 11
    septets). ``encoding`` is GSM7, EIGHT_BIT (latin-1) or UCS2; None picks
    GSM7 when the text allows, else UCS2. ``concat`` is (ref, total, seq);
    the text must fit one part (ValueError otherwise).
    """
    encoding = encoding or gsm7.pick_encoding(text)
    if encoding not in _DCS:
        raise ValueError(f"encoding must be one of {sorted(_DCS)}")
    if concat is not None and not isinstance(concat, Concat):
        concat = Concat(*concat)
    udh = _concat_udh(concat, ref16=ref16) if concat else b""
    udl, ud = _encode_user_data(text, encoding, udh)
    first = MTI_DELIVER | MMS_NO_MORE | (UDHI if udh else 0)
    tpdu = (
        bytes([first])
        + _encode_address(sender, "sender", allow_alpha=True)
        + bytes([0, _DCS[encoding]])
        + _encode_timestamp(timestamp, "timestamp")
        + bytes([udl])
        + ud
    )
    return _encode_smsc(smsc) + tpdu


def _decode_deliver(r: _Reader, smsc: str | None) -> Deliver:
    first = r.octet("first octet")
    sender = _read_address(r, "TP-OA")
    pid = r.octet("TP-PID")
    dcs = r.octet("TP-DCS")
    timestamp = _read_timestamp(r, "TP-SCTS")
    ud = _read_user_data(r, dcs, bool(first & UDHI))
    r.finish("TP-UD")
    return Deliver(
        sender=sender,
        text=ud.text,
        encoding=ud.encoding,
        timestamp=timestamp,
        smsc=smsc,
        concat=ud.concat,
        udh=ud.udh,
        data=ud.data,
        pid=pid,
        dcs=dcs,
    )


# --------------------------------------------------------------------------
# SMS-STATUS-REPORT (TS 23.040 section 9.2.2.3)


def encode_status_report(
    *,
    reference: int,
    recipient: str,
    scts: datetime,
    discharge: datetime,
    status_code: int,
    smsc: str | None = None,
) -> bytes:
    """One SMS-STATUS-REPORT PDU (SMSC octets included), as +CDS gives it.

    ``status_code`` is TP-ST (0x00 delivered, 0x20-0x3F still trying,
    0x40-0x7F failed; see :func:`status_of`).
    """
    if not 0 <= reference <= 255 or not 0 <= status_code <= 255:
        raise ValueError("reference and status_code must be 0-255")
    tpdu = (
        bytes([MTI_STATUS_REPORT | MMS_NO_MORE, reference])
        + _encode_address(recipient, "recipient")
        + _encode_timestamp(scts, "scts")
        + _encode_timestamp(discharge, "discharge")
        + bytes([status_code])
    )
    return _encode_smsc(smsc) + tpdu


def _decode_status_report(r: _Reader, smsc: str | None) -> StatusReport:
    r.octet("first octet")
    reference = r.octet("TP-MR")
    recipient = _read_address(r, "TP-RA")
    scts = _read_timestamp(r, "TP-SCTS")
    discharge = _read_timestamp(r, "TP-DT")
    status_code = r.octet("TP-ST")
    # TP-PI and the optional TP-PID / TP-DCS / TP-UD after it are ignored.
    return StatusReport(reference, recipient, scts, discharge, status_code, smsc)


# --------------------------------------------------------------------------
# Decoding entry point

Message = Deliver | Submit | StatusReport

# TP-MTI (TS 23.040 section 9.2.3.1) by direction: incoming = SC to MS.
# MTI 1 incoming is strictly SMS-SUBMIT-REPORT, but what a modem shows
# with that MTI (+CMGR of a stored unsent message) is an SMS-SUBMIT.
_DECODERS: dict[tuple[bool, int], Callable[[_Reader, str | None], Message]] = {
    (True, MTI_DELIVER): _decode_deliver,
    (True, MTI_SUBMIT): _decode_submit,
    (True, MTI_STATUS_REPORT): _decode_status_report,
    (False, MTI_SUBMIT): _decode_submit,
}
_UNSUPPORTED = {
    (True, 3): "reserved message type",
    (False, 0): "SMS-DELIVER-REPORT",
    (False, 2): "SMS-COMMAND",
    (False, 3): "reserved message type",
}


def decode(
    data: bytes | str, *, incoming: bool = True, tpdu_length: int | None = None
) -> Deliver | Submit | StatusReport:
    """Decode a PDU as +CMGR / +CMT / +CDS show it (SMSC octets first).

    ``incoming`` picks the reading of TP-MTI: True (SC to MS) gives DELIVER
    (0), SUBMIT (1, as stored on the SIM) and STATUS-REPORT (2); False (MS to
    SC, what a virtual modem gets from AT+CMGS) gives SUBMIT only.
    ``tpdu_length``, the ``<length>`` of the AT response, lets a PDU without
    the SMSC octets (some modems' +CDS) be read: when it equals the whole
    length there is no SMSC part. Raises :class:`PduError` when malformed.
    """
    raw = _to_bytes(data)
    r = _Reader(raw)
    smsc = None if tpdu_length == len(raw) else _read_smsc(r)
    if tpdu_length is not None and len(raw) - r.pos != tpdu_length:
        found = len(raw) - r.pos
        raise PduError(f"bad length: TPDU is {found} octets, the modem said {tpdu_length}")
    mti = r.peek("first octet") & 0x03
    decoder = _DECODERS.get((incoming, mti))
    if decoder is None:
        raise PduError(f"unsupported TPDU: {_UNSUPPORTED[(incoming, mti)]} (TP-MTI {mti})")
    return decoder(r, smsc)


def reassemble(parts: Iterable[Deliver | Submit]) -> str:
    """The text of a concatenated message from all its parts, in any order.

    The raw payloads are joined before decoding, so an escape sequence or a
    surrogate pair that a sender split across parts comes out whole.
    ValueError if parts are missing, repeated or from different messages.
    """
    ordered = sorted(parts, key=lambda p: p.concat.seq if p.concat else 0)
    if not ordered:
        raise ValueError("no parts")
    concats = [p.concat for p in ordered]
    if len(ordered) > 1 or concats[0] is not None:
        present = [c for c in concats if c is not None]
        if len(present) != len(concats) or len({(c.ref, c.total) for c in present}) != 1:
            raise ValueError("parts belong to different messages")
        if [c.seq for c in present] != list(range(1, present[0].total + 1)):
            raise ValueError("parts are missing or repeated")
    encodings = {p.encoding for p in ordered}
    if len(encodings) > 1:
        return "".join(p.text for p in ordered)
    return _payload_text(b"".join(p.data for p in ordered), encodings.pop())
