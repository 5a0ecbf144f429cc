"""Phone numbers: E.164 normalisation for the API and the store, and the
Notimation-style ``phone_number`` object (formatting, type, operator, city)
from the ``phonenumbers`` library's metadata, carrier and geocoder data."""

from __future__ import annotations

import logging
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
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"phone_number {text!r} cannot be parsed: {exc._msg}") from None


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


def normalise_many(raws: list[Any], region: str | None = None) -> list[tuple[str | None, str | None]]:
    """:func:`normalise` for a batch: (E.164, None) or (None, why not) each.
    Plain values in and out, so that it can run in another process."""
    out: list[tuple[str | None, str | None]] = []
    for raw in raws:
        try:
            out.append((normalise(raw, region), None))
        except ValueError as exc:
            out.append((None, str(exc)))
    return out


class NumberPool:
    """Validating phone numbers is most of the CPU a bulk send costs
    (phonenumbers is pure Python). A batch is split between this process and
    one worker process, so that the second core takes half of it. Small
    batches, or no worker (tests, a worker that died), are done here."""

    PARALLEL_FROM = 200  # numbers in a batch before half goes to the worker

    def __init__(self) -> None:
        self._enabled = False
        self._pool: Any = None
        self._warm: Any = None

    def start(self) -> None:
        """Allow the worker; it is started by the first bulk batch, which it
        does not slow down: that one is done here while the worker warms up."""
        self._enabled = True

    def _spawn(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the daemon has threads (SQLite, adb) by now.
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._warm = self._pool.submit(normalise_many, ["+33612345678"])  # imports and metadata

    def close(self) -> None:
        self._enabled = False
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def normalise(self, raws: list[Any], region: str | None = None) -> list[tuple[str | None, str | None]]:
        import asyncio
        from concurrent.futures.process import BrokenProcessPool

        if not self._enabled or len(raws) < self.PARALLEL_FROM:
            return normalise_many(raws, region)
        if self._pool is None:
            try:
                self._spawn()
            except Exception as exc:  # noqa: BLE001 - no worker: everything is done here, as before
                logging.getLogger(__name__).warning("number validation stays in one process: %s", exc)
                self._enabled = False
                self._pool = None
                return normalise_many(raws, region)
        if not self._warm.done():
            return normalise_many(raws, region)
        half = len(raws) // 2
        theirs = asyncio.get_running_loop().run_in_executor(self._pool, normalise_many, raws[half:], region)
        ours = normalise_many(raws[:half], region)
        try:
            return ours + await theirs
        except BrokenProcessPool:  # the worker died: a new one next time
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return ours + normalise_many(raws[half:], region)


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
    return {
        "number": phonenumbers.national_significant_number(number),
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


def mask(number: str) -> str:
    """``+33612345678`` → ``+336****5678``, for logs."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 8 if len(number) > 8 else 1) + number[-4:]
