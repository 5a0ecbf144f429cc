"""Judging what a client asks to send, one message (or contact) at a time.

Pure: no aiohttp, no store, no clock but the one ``date_to_send`` is read
against. Each function takes plain values and the :class:`Rules` of the
moment and returns frozen dataclasses: the job to queue, or the error codes
(``#00x``, see :mod:`bridge.api.errors`) and why. A batch's messages are
judged each on its own: the valid ones are accepted even when others fail.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import phonenumbers

from bridge.api._store import Contact, NewJob
from bridge.api.errors import (
    C_EMAIL,
    C_EMPTY,
    C_INVALID,
    C_MISSING,
    E_EMPTY,
    E_FORBIDDEN,
    E_NUMBER,
    E_UNKNOWN,
    ApiError,
)
from bridge.config import Config
from bridge.core import numbers
from bridge.core.records import maker, quick_init
from device_agents.modem.gsm7 import CHAR_TO_SEPTET, GSM7, SINGLE_LIMIT, segment_count

MAX_MESSAGE_CHARS = 5000
MAX_URL_CHARS = 2048
DATE_YEARS = (2000, 9998)
MAX_FIELD_CHARS = 256
LINK_PLACEHOLDERS = ("[Lien_Tracking]", "[Lien]", "[Link]")
LINK_CODE_CHARS = 10
LINK_ALPHABET = string.ascii_letters + string.digits
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CONTACT_NUMBER_KEYS = ("phonenumber", "phone_number", "phone", "number")

Checked = tuple[str | None, str | None]  # (E.164, None) or (None, why not)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def forbidden_matcher(words: tuple[str, ...]) -> Callable[[str], str | None] | None:
    """A function that returns the first forbidden word (whole word, any case,
    accents ignored) found in a text, or None; no words: None (nothing to look for)."""
    if not words:
        return None
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(_plain(w)) for w in words) + r")(?!\w)")

    def find(text: str) -> str | None:
        found = pattern.search(_plain(text))
        return found.group(1) if found else None
    return find


@dataclass(frozen=True, slots=True)
class Rules:
    """What judging depends on, from the configuration of the moment."""
    region: str | None  # reads numbers written without a country code
    timezone: str  # reads a date_to_send written without one
    public_url: str  # tracked links are {public_url}/l/{code}
    ttl_s: float  # how long a queued SMS stays wanted
    forbidden: Callable[[str], str | None] | None  # None: no word is forbidden

    @classmethod
    def from_config(cls, config: Config) -> Rules:
        return cls(region=config.api.default_region, timezone=config.api.timezone,
                   public_url=config.api.public_url, ttl_s=config.dispatcher.ttl_s,
                   forbidden=forbidden_matcher(config.api.forbidden_words))


@quick_init
@dataclass(frozen=True, slots=True)
class Judged:
    """One message of a sendsms request, judged: ``new`` is the job to queue,
    or None and ``errors`` say why not."""
    index: int
    new: NewJob | None
    errors: tuple[str, ...]
    detail: str | None
    phone_number: str  # as it will be answered: E.164 when valid, else as given
    message: str
    id_sms_api: str | None  # the client's, if it gave one


# What every accepted message is made of, made by position: a third of the time by keyword.
_new_job = maker(NewJob)
_judged = maker(Judged)


def normalise_batch(raws: list[Any], offset: int, region: str | None) -> list[Checked]:
    """(E.164, None) or (None, why not) for each number: what
    :class:`~bridge.api.workers.SplitPool` runs, here or in its worker process."""
    out: list[Checked] = []
    for raw in raws:
        try:
            out.append((numbers.normalise(raw, region), None))
        except ValueError as exc:
            out.append((None, str(exc)))
    return out


def require_number(raw: Any, region: str | None) -> str:
    """``raw`` as E.164, or a 400 with code #007 saying why not."""
    try:
        return numbers.normalise(raw, region)
    except ValueError as exc:
        raise ApiError(400, str(exc)[:200], E_NUMBER) from None


# Characters of one septet each (the default alphabet, not the extension table):
# a text of these alone, up to 160 of them, is one GSM-7 SMS.
ONE_SEPTET = frozenset(CHAR_TO_SEPTET)
# The same test as one regex: twice as fast as a set's issuperset on a 100-character text.
_ONE_SEPTET_TEXT = re.compile("[" + "".join(re.escape(c) for c in sorted(ONE_SEPTET)) + "]*")
ONE_SMS = SINGLE_LIMIT[GSM7]


def text_parts(text: str) -> tuple[int, str]:
    """The parts an SMS of ``text`` takes and its encoding, counted once."""
    if len(text) <= ONE_SMS and _ONE_SEPTET_TEXT.fullmatch(text) is not None:
        # What segment_count says of such a text, without counting: most texts are these.
        return 1, GSM7
    seg = segment_count(text)
    return seg.parts, seg.encoding


def sms_job(phone_number: str, text: str, **fields: Any) -> NewJob:
    """An SMS job, its parts and encoding counted (once) from its text."""
    parts, encoding = text_parts(text)
    return NewJob(kind="sms", phone_number=phone_number, message=text, parts=parts, encoding=encoding, **fields)


def parse_date(value: Any, timezone: str) -> float:
    """``date_to_send`` (``YYYY-MM-DD HH:mm:ss`` or ISO 8601; local to
    ``timezone`` when it names no zone) as epoch seconds."""
    if not isinstance(value, str):
        raise ValueError("date_to_send must be a string \"YYYY-MM-DD HH:mm:ss\"")
    try:
        when = dt.datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"date_to_send {value!r} is not \"YYYY-MM-DD HH:mm:ss\"") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(timezone))
    # A past date means "send now"; but every stored time must be writable back
    # as a date (year 1 is not, once in UTC), so the years are bounded.
    if not DATE_YEARS[0] <= when.year <= DATE_YEARS[1]:
        raise ValueError(f"date_to_send {value!r} is out of range (years {DATE_YEARS[0]} to {DATE_YEARS[1]})")
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"date_to_send {value!r} is out of range") from None


def _shown(text: Any) -> str:
    """A message's text as a refusal shows it."""
    return text[:MAX_MESSAGE_CHARS] if isinstance(text, str) else ""


_ABSENT: Any = object()  # a key a message does not have (not the same as one given as null)


def raw_number(item: dict[str, Any]) -> Any:
    """A message's number as given: ``phone_number``, or the older ``phonenumber``."""
    return item["phone_number"] if "phone_number" in item else item.get("phonenumber")


def judge_message(index: int, item: Any, header: Mapping[str, Any], default_priority: Any, rules: Rules,
                  checked: Checked | None = None) -> Judged:
    """Judge one message of a sendsms batch. ``checked``: its number already
    normalised (see :func:`normalise_batch`); else it is done here."""
    if not isinstance(item, dict):
        return Judged(index, None, (E_UNKNOWN,), f"messages[{index}] must be an object", "", "", None)
    get = item.get
    text = get("message")
    errors: list[str] = []
    details: list[str] = []
    id_sms_api = get("id_sms_api")
    if id_sms_api is not None:
        if (not isinstance(id_sms_api, (str, int)) or isinstance(id_sms_api, bool)
                or not 0 < len(str(id_sms_api)) <= 64):
            errors.append(E_UNKNOWN)
            details.append("id_sms_api must be a string of 1 to 64 characters")
            id_sms_api = None
        elif type(id_sms_api) is not str:
            id_sms_api = str(id_sms_api)
    if not isinstance(text, str) or not text or text.isspace():
        errors.append(E_EMPTY)
        details.append("message is empty")
    elif len(text) > MAX_MESSAGE_CHARS:
        errors.append(E_UNKNOWN)
        details.append(f"message is longer than {MAX_MESSAGE_CHARS} characters")
    elif rules.forbidden is not None:
        word = rules.forbidden(text)
        if word is not None:
            errors.append(E_FORBIDDEN)
            details.append(f"message contains the forbidden word {word!r}")
    if checked is None:
        [checked] = normalise_batch([raw_number(item)], 0, rules.region)
    number, why_not = checked
    if number is None:
        errors.append(E_NUMBER)
        details.append(why_not or "the phone number is invalid")
        number_raw = raw_number(item)
        number = str(number_raw)[:64] if isinstance(number_raw, (str, int)) else ""  # as given
    # Each key read once where the message has it (a key given as null is given: no fallback).
    priority = get("priorite", _ABSENT)
    if priority is _ABSENT:
        priority = get("priority", default_priority)
    if isinstance(priority, str) and priority.strip().isdigit():
        priority = int(priority)
    if isinstance(priority, bool) or priority not in (0, 1, 2):
        errors.append(E_UNKNOWN)
        details.append(f"priorite must be 0, 1 or 2, not {priority!r}"[:120])
        priority = 1
    due = None
    when = get("date_to_send", _ABSENT)
    if when is _ABSENT:
        when = header.get("date_to_send")
    if when is not None and when != "":
        try:
            due = parse_date(when, rules.timezone)
        except ValueError as exc:
            errors.append(E_UNKNOWN)
            details.append(str(exc)[:200])
    url = get("url")
    if url is None or url == "":
        url = None
    elif not isinstance(url, str) or len(url) > MAX_URL_CHARS or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).netloc:
        errors.append(E_UNKNOWN)
        details.append(f"url must be an http:// or https:// URL of at most {MAX_URL_CHARS} characters")
        url = None
    elif any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        # A redirect to it could never be sent (a CR/LF in a Location header).
        errors.append(E_UNKNOWN)
        details.append("url must not contain spaces or control characters (percent-encode them)")
        url = None
    if errors or not isinstance(text, str):
        return Judged(index, None, tuple(dict.fromkeys(errors)), "; ".join(details), number, _shown(text),
                      id_sms_api)
    code = None
    if url:
        code = "".join(secrets.choice(LINK_ALPHABET) for _ in range(LINK_CODE_CHARS))
        short = f"{rules.public_url}/l/{code}"  # as bridge.api.links.short_url writes it
        if any(p in text for p in LINK_PLACEHOLDERS):
            for placeholder in LINK_PLACEHOLDERS:
                text = text.replace(placeholder, short)
        else:
            # A url without a placeholder: the link goes at the end, after a space
            # (the official SDKs' README answers show it so).
            text = f"{text} {short}"
        if len(text) > MAX_MESSAGE_CHARS:
            # Checked after expansion: what goes to the phone is what must fit.
            return Judged(index, None, (E_UNKNOWN,), f"message is longer than {MAX_MESSAGE_CHARS} characters "
                          f"once its links are written out ({len(text)})", number, _shown(item.get("message")),
                          id_sms_api)
    parts, encoding = text_parts(text)
    # Made by position (bridge.core.records.maker): kind, phone_number, message, id_sms_api, url,
    # priority, due, ttl_s, parts, encoding, report, link_code, sealed.
    new = _new_job("sms", number, text, id_sms_api, url, priority, due, rules.ttl_s, parts, encoding, True, code,
                   None)
    return _judged(index, new, (), None, number, text, id_sms_api)


# -- contacts --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JudgedContact:
    """One entry of a contact request, judged: ``contact`` is what to save, or
    None; ``errors`` (contact codes) may hold a warning even when it is saved."""
    firstname: str
    lastname: str
    email: str
    address: str
    number_key: str | None  # how the request spelled the number's field
    phone_number: str  # E.164 when valid, else as given
    spellings: tuple[tuple[str, str], ...]  # the request's other spellings, answered back
    errors: tuple[str, ...]
    contact: Contact | None
    not_an_object: bool = False


def field_text(value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    """A free-text field as a string: numbers are written out, anything else is empty."""
    if isinstance(value, str):
        return value.strip()[:limit]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def contact_region(country: str) -> str | None:
    """``FR``, ``33`` or ``+33`` → ``FR``; anything else → None."""
    if country.upper() in phonenumbers.SUPPORTED_REGIONS:
        return country.upper()
    digits = country.lstrip("+").lstrip("0")
    if digits.isdigit() and len(digits) <= 3:
        region = phonenumbers.region_code_for_country_code(int(digits))
        return region if region in phonenumbers.SUPPORTED_REGIONS else None
    return None


def judge_contact(item: Any, region: str | None) -> JudgedContact:
    if not isinstance(item, dict):
        return JudgedContact("", "", "", "", None, "", (), (C_MISSING,), None, not_an_object=True)
    first = field_text(item.get("firstname", item.get("first_name")))
    last = field_text(item.get("lastname", item.get("last_name")))
    email = field_text(item.get("email"))
    address = field_text(item.get("adress", item.get("address")))
    country = field_text(item.get("countryCode", item.get("country_code")), 8)
    # The spellings the request used come back too (seed 001 answers in its own).
    spellings = tuple((alias, value) for alias, value in (("first_name", first), ("last_name", last))
                      if alias in item)
    key = next((k for k in CONTACT_NUMBER_KEYS if k in item), None)
    errors: list[str] = []
    contact = None
    shown = ""
    if key is None:
        errors.append(C_MISSING)
    else:
        raw = item[key]
        shown = field_text(raw, 64)
        if raw is None or not shown:
            errors.append(C_EMPTY)
        else:
            try:
                number = numbers.normalise(raw, contact_region(country) or region)
            except ValueError:
                errors.append(C_INVALID)
            else:
                shown = number
                contact = Contact(phone_number=number, firstname=first, lastname=last, email=email,
                                  address=address, country_code=country)
    if email and not EMAIL_RE.match(email):
        errors.append(C_EMAIL)  # a warning: the contact is still saved
    return JudgedContact(first, last, email, address, key, shown, spellings, tuple(errors), contact)
