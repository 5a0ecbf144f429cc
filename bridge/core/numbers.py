"""Phone numbers: E.164 normalisation for the API and the store, and the
Notimation-style ``phone_number`` object (formatting, type, operator, city)
from the ``phonenumbers`` library's metadata, carrier and geocoder data.

The carrier, geocoder and time-zone data are imported by the first call that
needs them, never at start: the geocoder alone is ~100 MB of RSS, and only
number lookups use it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import phonenumbers

MAX_NUMBER_CHARS = 64

_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "invalid country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.INVALID_LENGTH: "invalid length",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
}


def _text(raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ValueError("phone_number must be a string")
    text = str(raw).strip()
    if not text:
        raise ValueError("phone_number is empty")
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"phone_number is longer than {MAX_NUMBER_CHARS} characters")
    if text.startswith("00"):
        text = "+" + text[2:]
    return text


def parse(raw: Any, region: str | None = None) -> phonenumbers.PhoneNumber:
    """The parsed number; ValueError saying why it cannot be read (not
    whether it is valid: see :func:`invalid_reason`)."""
    text = _text(raw)
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone_number {text!r} cannot be parsed: {exc._msg}") from None
    # Written at home (no +): Argentina's mobiles lose their 9. Written in full
    # international form, a number is taken as written.
    return number if text.startswith("+") else _argentine_mobile(number)


def _argentine_mobile(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber:
    """Argentina's mobiles are dialled from abroad with a 9 after +54 (ITU-T
    E.164 national plan of Argentina, ENACOM; libphonenumber's AR metadata:
    mobile = 9 + area code + number), but written at home without it
    (``11 5555-4444``, ``011 15 5555-4444``), which reads as a fixed line. An SMS
    goes to mobiles only, so a 10-digit national number (written without
    the +54) that is a valid mobile with the 9 is read as that mobile, as
    Notimation (seed 004) does: ``ar/1155554444`` is ``+5491155554444``."""
    if number.country_code != 54:
        return number
    national = str(number.national_number)
    if len(national) != 10 or national.startswith("9"):
        return number
    mobile = phonenumbers.PhoneNumber(country_code=54, national_number=int("9" + national))
    if phonenumbers.number_type(mobile) == phonenumbers.PhoneNumberType.MOBILE and phonenumbers.is_valid_number(mobile):
        return mobile
    return number


def invalid_reason(number: phonenumbers.PhoneNumber) -> str | None:
    """None for a valid number, else why it is not."""
    if phonenumbers.is_valid_number(number):
        return None
    reason = _REASONS.get(phonenumbers.is_possible_number_with_reason(number))
    return reason or "not a number in use in its country's numbering plan"


# In the order a number's pattern tries them: any that matches makes the number valid, so the types
# most numbers sent to are come first (a mobile number no longer fails eight other patterns first).
_TYPES = ("mobile", "fixed_line", "voip", "toll_free", "shared_cost", "premium_rate", "personal_number", "pager",
          "uan", "voicemail")


def _plan(country_code: int) -> dict[int, re.Pattern[str]] | None:
    """What makes a national number of ``country_code`` valid, read once from
    phonenumbers' metadata, for a country code with one region only (else
    None): for each length, one pattern that a valid number of that length
    matches whole and that refuses one the parser would strip a national prefix
    from (a negative lookahead of that prefix: phonenumbers is asked then). That
    is phonenumberutil's ``_number_type_helper`` != UNKNOWN: the general
    description, then any type's, each checked for its possible lengths
    first (``_is_number_matching_desc``)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if len(regions) != 1:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, regions[0])
    if metadata is None:
        return None
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return None
    descs = [d for d in (getattr(metadata, name) for name in _TYPES) if d is not None and d.national_number_pattern]
    lengths = set(general.possible_length or range(2, 18))
    for d in descs:
        lengths.update(d.possible_length or ())
    prefix = metadata.national_prefix_for_parsing
    no_prefix = f"(?!(?:{prefix}))" if prefix else ""
    by_length: dict[int, re.Pattern[str]] = {}
    for length in sorted(lengths):
        if general.possible_length and length not in general.possible_length:
            continue
        fitting = [d.national_number_pattern for d in descs if not d.possible_length or length in d.possible_length]
        if fitting:
            types = "|".join(f"(?:{p})" for p in fitting)
            by_length[length] = re.compile(f"{no_prefix}(?=(?:{general.national_number_pattern})$)(?:{types})")
    return by_length


# Each country code as written ("33") -> its patterns by national length (see _plan): each read once,
# when first met.
_CODES = {str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
_PLANS: dict[str, dict[int, re.Pattern[str]] | None] = {}


def fast_e164(text: str) -> str | None:
    """``text`` when it is a valid number already written ``+<digits>``,
    decided from the same metadata as :func:`phonenumbers.is_valid_number`
    without building a PhoneNumber (a tenth of the time); None means: ask
    phonenumbers (another form, a country code shared by several regions, a
    number the parser would take a national prefix from, or not valid)."""
    digits = text[1:]
    if text[:1] != "+" or not digits.isascii() or not digits.isdigit() or not 4 <= len(digits) <= 20:
        return None
    # Country codes are prefix-free (ITU-T E.164): the number's is the one of its first 1, 2 or 3
    # digits that is one.
    code = digits[:1]
    if code not in _CODES:
        code = digits[:2]
        if code not in _CODES:
            code = digits[:3]
            if code not in _CODES:
                return None
    try:
        by_length = _PLANS[code]
    except KeyError:  # not met before
        by_length = _PLANS[code] = _plan(_CODES[code])
    if by_length is None:
        return None
    pattern = by_length.get(len(digits) - len(code))
    # The national number is matched where it starts in ``digits``, not copied out.
    return text if pattern is not None and pattern.fullmatch(digits, len(code)) else None


def normalise(raw: Any, region: str | None = None) -> str:
    """E.164 form of ``raw`` (``+33612345678``); ValueError saying why it is
    not a valid number. ``region`` reads numbers written without a country code."""
    if isinstance(raw, str) and raw[:1] == "+":
        fast = fast_e164(raw)
        if fast is not None:
            return fast
    number = parse(raw, region)
    reason = invalid_reason(number)
    if reason is not None:
        raise ValueError(f"phone_number {_text(raw)!r} is not a valid number ({reason})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_or_keep(raw: str, region: str | None = None) -> str:
    """E.164 when ``raw`` is a valid number, else ``raw`` unchanged (for what
    devices report: a sender may be a short code or a name)."""
    try:
        return normalise(raw, region)
    except ValueError:
        return raw


MOBILE_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


def describe(raw: Any, region: str | None, *, lang: str = "en") -> dict[str, Any]:
    """Notimation's ``phone_number`` object. A number that cannot be parsed
    raises ValueError; one that parses but is not valid comes back with
    ``is_invalid: true`` and the reason."""
    number = parse(raw, region)
    reason = invalid_reason(number)
    kind = phonenumbers.number_type(number)
    from phonenumbers import carrier, geocoder  # lazily: see the module's doc

    operator = carrier.name_for_number(number, lang) or None if reason is None else None
    city = geocoder.description_for_number(number, lang) or None if reason is None else None
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 54 and kind == phonenumbers.PhoneNumberType.MOBILE and national.startswith("9"):
        national = national[1:]  # as Argentines write it, and Notimation's examples show it
    return {
        "number": national,
        "formatted_number": phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        "international_number": phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        "is_mobile": kind in MOBILE_TYPES,
        "is_invalid": reason is not None,
        "invalid_reason": reason,
        "operator": operator,
        "city": city,
        "country": phonenumbers.region_code_for_number(number),
        "type": _TYPE_NAMES.get(kind, "unknown"),
    }


_TYPE_NAMES = {getattr(phonenumbers.PhoneNumberType, name): name.lower()
               for name in ("FIXED_LINE", "MOBILE", "FIXED_LINE_OR_MOBILE", "TOLL_FREE", "PREMIUM_RATE",
                            "SHARED_COST", "VOIP", "PERSONAL_NUMBER", "PAGER", "UAN", "VOICEMAIL")}


@functools.lru_cache(maxsize=1024)
def time_zone(e164: str) -> str | None:
    """The recipient's time zone (``Europe/Paris``) when its number tells one
    zone, else None (a country over several zones, a non-geographic number,
    a number that cannot be read). Cached by number prefix use: bounded."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    from phonenumbers import timezone  # lazily: see the module's doc

    zones = timezone.time_zones_for_number(number)
    if len(zones) != 1 or zones[0] == timezone.UNKNOWN_TIMEZONE:
        return None
    return str(zones[0])
