"""Verification codes (the SMSFLOW idea): a short numeric code sent by SMS,
checked later. Only a salted scrypt hash of the code is stored; a check
spends one of a handful of tries before it compares, in constant time.

The SMS that carries the code is stored with the code masked (what every
read side and webhook shows) and its real text sealed under a key derived
from ``secret.key`` (:mod:`bridge.core.sealing`): it is opened only when the
job is pushed to a device, and wiped once the job can no longer be pushed."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bridge.api._store import NewJob
from bridge.api.judging import sms_job
from bridge.core.sealing import MASK_CHAR, Sealer

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


def code_job(number: str, template: str, code: str, sealer: Sealer, *, ttl_s: float) -> NewJob:
    """The priority-2 SMS job that carries ``code``: its text with the code
    masked, the real one sealed (bound to the number). Parts and encoding are
    counted from the real text (the mask has as many characters)."""
    real = sms_job(number, render(template, code), priority=2, ttl_s=ttl_s)
    return NewJob(kind=real.kind, phone_number=number, message=render(template, MASK_CHAR * len(code)),
                  priority=real.priority, ttl_s=real.ttl_s, parts=real.parts, encoding=real.encoding,
                  sealed=sealer.seal(real.message, number))
