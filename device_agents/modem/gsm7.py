"""GSM 03.38 / 3GPP TS 23.038 default alphabet and the SMS length rules.

Pure code, no I/O. Used by the PDU codec (packing septets) and by the API (the
``sms_per_message`` figure every send answers with).
"""

from __future__ import annotations

from dataclasses import dataclass

# The default alphabet, indexed by septet value (TS 23.038 section 6.2.1).
# 0x1B is the escape to the extension table; it stands in the table as
# itself and is never produced by decoding on its own.
DEFAULT_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(DEFAULT_ALPHABET) == 128

ESCAPE = 0x1B

# The extension table (TS 23.038 section 6.2.1.1): reached with ESC + septet.
EXTENSION_TABLE = {
    0x0A: "\x0c",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

CHAR_TO_SEPTET = {c: i for i, c in enumerate(DEFAULT_ALPHABET) if i != ESCAPE}
CHAR_TO_EXTENSION = {c: s for s, c in EXTENSION_TABLE.items()}

_GSM7_CHARS = frozenset(CHAR_TO_SEPTET) | frozenset(CHAR_TO_EXTENSION)
_EXTENSION_CHARS = tuple(CHAR_TO_EXTENSION)

GSM7 = "gsm7"
UCS2 = "ucs2"

# Characters per single SMS and per part of a concatenated SMS (the 6-octet
# concatenation UDH costs 7 septets / 3 UCS-2 characters).
SINGLE_LIMIT = {GSM7: 160, UCS2: 70}
PART_LIMIT = {GSM7: 153, UCS2: 67}


def is_gsm7(text: str) -> bool:
    """True when every character of ``text`` has a GSM 7-bit encoding."""
    return _GSM7_CHARS.issuperset(text)


def to_septets(text: str) -> list[int]:
    """Septet values for ``text``; extension characters become ESC + code.

    Raises ValueError naming the first character outside the alphabet.
    """
    out: list[int] = []
    for c in text:
        s = CHAR_TO_SEPTET.get(c)
        if s is not None:
            out.append(s)
            continue
        e = CHAR_TO_EXTENSION.get(c)
        if e is None:
            raise ValueError(f"character {c!r} is not in the GSM 7-bit alphabet")
        out.extend((ESCAPE, e))
    return out


def from_septets(septets: list[int] | bytes) -> str:
    """Text for a list of septet values; an unknown escape decodes as a space,
    as TS 23.038 asks of receivers, and a trailing lone ESC is dropped."""
    chars: list[str] = []
    escaped = False
    for s in septets:
        if escaped:
            chars.append(EXTENSION_TABLE.get(s, " "))
            escaped = False
        elif s == ESCAPE:
            escaped = True
        else:
            chars.append(DEFAULT_ALPHABET[s & 0x7F])
    return "".join(chars)


def pack_septets(septets: list[int], *, shift: int = 0) -> bytes:
    """Pack septets LSB first into octets (TS 23.038 section 6.1.2.1.1).

    ``shift`` fill bits (zero) come first: after a user data header the
    septets must start on a septet boundary (TS 23.040 section 9.2.3.24).
    """
    value = 0
    for i, s in enumerate(septets):
        value |= (s & 0x7F) << (7 * i)
    nbits = shift + 7 * len(septets)
    return (value << shift).to_bytes(-(-nbits // 8), "little")


def unpack_septets(data: bytes, count: int, *, shift: int = 0) -> list[int]:
    """The first ``count`` septets packed in ``data`` after ``shift`` fill
    bits; the caller checks that ``data`` is long enough."""
    value = int.from_bytes(data, "little") >> shift
    return [(value >> (7 * i)) & 0x7F for i in range(count)]


def ucs2_units(text: str) -> int:
    """UTF-16 code units of ``text``: what UCS-2 SMS lengths are counted in
    (a character outside the BMP takes two)."""
    return text_units(text, UCS2)


def char_units(c: str, encoding: str) -> int:
    """Units one character costs: septets for GSM7 (2 for an extension
    character: ESC + code), UTF-16 code units for UCS2 (2 outside the BMP)."""
    if encoding == GSM7:
        return 2 if c in CHAR_TO_EXTENSION else 1
    return 2 if ord(c) > 0xFFFF else 1


def text_units(text: str, encoding: str) -> int:
    """Septets (GSM7) or UTF-16 code units (UCS2) that ``text`` takes."""
    if encoding == GSM7:
        return len(text) + sum(map(text.count, _EXTENSION_CHARS))
    return len(text.encode("utf-16-le")) // 2


def part_limit(encoding: str, *, udh_octets: int = 6) -> int:
    """Units per part when each part carries a ``udh_octets``-long user data
    header (UDHL included): 6 for the 8-bit-reference concatenation header,
    7 for the 16-bit one (TS 23.040 section 9.2.3.24).

    140 octets of user data: GSM7 loses ceil(udh*8/7) septets of its 160
    (153 / 152), UCS2 loses the header octets (67 / 66 characters).
    """
    if encoding == GSM7:
        return SINGLE_LIMIT[GSM7] - -(-udh_octets * 8 // 7)
    return (140 - udh_octets) // 2


def pick_encoding(text: str, *, force_ucs2: bool = False) -> str:
    """GSM7 when every character has a 7-bit encoding, else UCS2."""
    return UCS2 if force_ucs2 or not is_gsm7(text) else GSM7


def split_text(text: str, encoding: str | None = None, *, udh_octets: int = 6) -> list[str]:
    """The parts ``text`` is sent as: one when it fits a single SMS, else
    chunks of at most ``part_limit`` units.

    A part never ends between the two septets of an extension character
    (ESC + code) nor between the two halves of a UTF-16 surrogate pair: the
    split is made on character boundaries. An empty text is one empty part.
    """
    encoding = encoding or pick_encoding(text)
    if text_units(text, encoding) <= SINGLE_LIMIT[encoding]:
        return [text]
    limit = part_limit(encoding, udh_octets=udh_octets)
    parts: list[str] = []
    start, used = 0, 0
    for i, c in enumerate(text):
        cost = char_units(c, encoding)
        if used + cost > limit:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return parts


@dataclass(frozen=True, slots=True)
class Segmentation:
    encoding: str  # GSM7 | UCS2
    units: int  # septets (GSM7) or UTF-16 code units (UCS2)
    parts: int


def segment_count(text: str) -> Segmentation:
    """How many SMS ``text`` takes: GSM-7 160/153, UCS-2 70/67.

    Extension characters (``€[]{}|^~\\`` and form feed) take two septets,
    characters outside the BMP two UTF-16 units. The count is exactly the
    number of parts :func:`split_text` (and so the PDU encoder) produces,
    which may be one more than ``ceil(units / 153)`` when an extension
    character or a surrogate pair would straddle a part boundary.
    An empty text is one (empty) SMS.
    """
    encoding = pick_encoding(text)
    units = text_units(text, encoding)
    if units <= SINGLE_LIMIT[encoding]:
        return Segmentation(encoding, units, 1)
    return Segmentation(encoding, units, len(split_text(text, encoding)))
