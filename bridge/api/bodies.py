"""Reading request bodies: JSON (numbers JSON allows, text that is Unicode),
form fields, inSIM's ``header`` (an object, or the Ardary form's one-element
list) and whole-number parameters. Anything unreadable is a clear 400; the
size limit is the application's (``api.max_body_bytes``, a 413)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from bridge.api.errors import E_AUTH, ApiError

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# A JSON escape of a UTF-16 surrogate (U+D800..U+DFFF): the only way a lone
# surrogate gets into a body that is valid UTF-8 (a pair is fine; one alone is
# not text). Seen rarely: only then is the parsed body searched.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
# Every digit as "0", every other byte as "x": a body with 19 digits in a row may hold an integer
# past 64 bits, which orjson reads as a float (json keeps it whole).
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _lone_surrogate(value: Any) -> bool:
    """Whether any string in a parsed body (keys too) is not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def json_body(request: web.Request) -> Any:
    return parse_json(await request.read())


def parse_json(raw: bytes) -> Any:
    """A body read as JSON allows, or a 400 saying why not."""
    # orjson first: it reads a body in a third of json's time, and what it accepts json reads the
    # same (UTF-8 text only, no lone surrogate, no NaN or infinity, integers of up to 64 bits).
    # Whatever it refuses, or a body that may hold a longer integer, is read by json: the same
    # answers, errors included.
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return parse_json_slowly(raw)


def parse_json_slowly(raw: bytes) -> Any:
    """:func:`parse_json` by the standard library alone."""
    try:
        text = raw.decode()  # strict UTF-8: encoded surrogates fail here, and the parse reads the text
    except UnicodeDecodeError:
        text = None  # another encoding JSON allows (UTF-16, UTF-32), or not text at all
    try:
        body = json.loads(raw if text is None else text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}"[:300]) from None
    # Lone surrogates (\ud800) are valid JSON but not text: refuse them here.
    if (text is None or SURROGATE_ESCAPE.search(raw)) and _lone_surrogate(body):
        raise ApiError(400, "body contains text that is not valid Unicode")
    return body


async def object_body(request: web.Request, what: str = "body must be a JSON object") -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, what)
    return body


async def params(request: web.Request) -> dict[str, Any]:
    """A JSON object, or form fields (SMSFLOW's clients post forms); nothing: {}."""
    if request.content_type in FORM_TYPES:
        try:
            form = await request.post()
        except ValueError as exc:
            raise ApiError(400, f"form body cannot be read: {exc}"[:300]) from None
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        for value in fields.values():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ApiError(400, "form contains text that is not valid Unicode") from None
        return fields
    if not await request.read():
        return {}
    return await object_body(request)


def insim_header(body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """inSIM's ``header`` object, and whether it came in the Ardary form (a list)."""
    header = body.get("header")
    if isinstance(header, list):
        return (header[0] if header and isinstance(header[0], dict) else {}), True
    if not isinstance(header, dict):
        raise ApiError(200, "'header' must be an object with 'login' and 'accessKey'", E_AUTH)
    return header, False


def int_param(values: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high`` (digits, as text or a number), or ``default``."""
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 12 or not low <= int(text) <= high:
        raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}")
    return int(text)
