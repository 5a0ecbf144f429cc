"""Small formatting helpers shared by both ends (the bridge imports them; the
agents must not import the bridge): one way to mask a phone number, one way
to write an ISO time."""

from __future__ import annotations

import datetime as dt
import functools


def mask_number(number: str) -> str:
    """``+33612345678`` → ``+336****5678``, so that logs at INFO and above
    carry no full phone number. Short strings are masked whole."""
    if len(number) <= 8:
        return "*" * len(number)
    return f"{number[:4]}****{number[-4:]}"


@functools.lru_cache(maxsize=4096)  # a batch's messages share their time: format it once
def iso_utc(ts: float) -> str:
    """``2025-01-15T14:30:00.000Z`` (milliseconds, UTC), as inSIM writes times."""
    ms = int(round(ts * 1000))
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def same_number(a: str | None, b: str | None) -> bool:
    """The same number as a phone or SIM stores it: with or without the country
    prefix (the last 9 digits decide), or the same name (e.g. "Orange")."""
    da = "".join(c for c in a or "" if c.isdigit())
    db = "".join(c for c in b or "" if c.isdigit())
    if not da or not db:
        return (a or "").strip().lower() == (b or "").strip().lower()
    n = min(len(da), len(db), 9)
    return da[-n:] == db[-n:]
