"""Verification codes (the SMSFLOW idea): a short numeric code sent by SMS,
checked later. Only a salted scrypt hash of the code is stored; a check
spends one of a handful of tries before it compares, in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

DEFAULT_TTL_S = 15 * 60
MIN_TTL_S = 30
MAX_TTL_S = 24 * 3600
DEFAULT_LENGTH = 6
MIN_LENGTH, MAX_LENGTH = 4, 10
MAX_TRIES = 5
DEFAULT_TEMPLATE = "Your verification code is {code}"
MAX_TEMPLATE_CHARS = 480

# scrypt with 16 MiB of memory: ~tens of ms a hash, run off the event loop.
_N, _R, _P = 2 ** 14, 8, 1


def new_code(length: int = DEFAULT_LENGTH) -> str:
    return f"{secrets.randbelow(10 ** length):0{length}d}"


def new_salt() -> bytes:
    return secrets.token_bytes(16)


def digest(code: str, salt: bytes) -> bytes:
    return hashlib.scrypt(code.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32, maxmem=64 * 1024 * 1024)


def matches(candidate: str, salt: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(digest(candidate, salt), expected)


def render(template: str, code: str) -> str:
    return template.replace("{code}", code)
