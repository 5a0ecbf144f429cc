"""Phone numbers: E.164 normalisation for the API and the store, and the
Notimation-style ``phone_number`` object (formatting, type, operator, city)
from the ``phonenumbers`` library's metadata, carrier and geocoder data."""

from __future__ import annotations

from typing import Any

import phonenumbers
from phonenumbers import carrier, geocoder

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
    return _argentine_mobile(number)


def _argentine_mobile(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber:
    """Argentina's mobiles are dialled from abroad with a 9 after +54 (ITU-T
    E.164 national plan of Argentina, ENACOM; libphonenumber's AR metadata:
    mobile = 9 + area code + number), but written at home without it
    (``11 5555-4444``, ``011 15 5555-4444``), which reads as a fixed line. An SMS
    goes to mobiles only, so a 10-digit national number that is a valid
    mobile with the 9 is read as that mobile, as Notimation (seed 004) does:
    ``ar/1155554444`` is ``+5491155554444``."""
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


def normalise(raw: Any, region: str | None = None) -> str:
    """E.164 form of ``raw`` (``+33612345678``); ValueError saying why it is
    not a valid number. ``region`` reads numbers written without a country code."""
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
