"""Pages of the message list by keyset: a cursor names the last row a page
ended on, and the next page starts after it, whatever its depth (OFFSET walks
every skipped row). The order is newest first: ``created`` descending, then
outgoing before inbound, then id descending. ``skip`` stays for the clients
that use it; it is served from the keys alone, the rows read for the page
only, and the database skips them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

OUT, IN = "o", "i"
_CURSOR = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)_([oi])_(\d+)")


@dataclass(frozen=True, slots=True)
class Key:
    created: float
    direction: str  # OUT or IN
    id: int

    def cursor(self) -> str:
        return f"{self.created!r}_{self.direction}_{self.id}"


def parse_cursor(text: str) -> Key:
    """The key a cursor names; ValueError for anything else."""
    found = _CURSOR.fullmatch(text)
    if found is None:
        raise ValueError("not a cursor of this list (use the next_cursor of the previous page)")
    return Key(float(found.group(1)), found.group(2), int(found.group(3)))


def after_sql(direction: str, created: str, ident: str, after: Key | None) -> tuple[str, tuple[object, ...]]:
    """The condition (``?`` placeholders) keeping the rows of one side
    (OUT or IN) that come after ``after`` in the list's order."""
    if after is None:
        return "", ()
    # "created <= ?" first: a range both engines walk the index by (an OR alone they would not).
    tie = f" AND {created} <= ? AND ({created} < ? OR {ident} < ?)"
    if direction == OUT:
        if after.direction == OUT:
            return tie, (after.created, after.created, after.id)
        return f" AND {created} < ?", (after.created,)
    if after.direction == OUT:
        return f" AND {created} <= ?", (after.created,)
    return tie, (after.created, after.created, after.id)


def keys_sql(account: str, *, outgoing: bool, inbound: bool, states: Sequence[str] | None, after: Key | None,
             take: int, skip: int) -> tuple[str, tuple[object, ...]]:
    """One statement (``?`` placeholders) for the page's keys, rows of
    (created, direction, id): each side walked by its index, merged and
    skipped by the database, so that no skipped row reaches Python.
    ``states``: the outgoing jobs' states kept (None: any)."""
    parts: list[str] = []
    params: list[object] = []
    if outgoing:
        cond, args = after_sql(OUT, "created", "id", after)
        state = f" AND state IN ({', '.join('?' * len(states))})" if states else ""
        parts.append(f"SELECT * FROM (SELECT created AS c, '{OUT}' AS d, id FROM jobs WHERE account = ? "
                     f"AND kind = 'sms'{state}{cond} ORDER BY created DESC, id DESC LIMIT ?) AS o")
        params += [account, *(states or ()), *args, take + skip]
    if inbound:
        cond, args = after_sql(IN, "stored_at", "id", after)
        parts.append(f"SELECT * FROM (SELECT stored_at AS c, '{IN}' AS d, id FROM inbound_sms WHERE account = ?"
                     f"{cond} ORDER BY stored_at DESC, id DESC LIMIT ?) AS i")
        params += [account, *args, take + skip]
    # Outgoing before inbound at the same time: 'o' > 'i'.
    return " UNION ALL ".join(parts) + " ORDER BY c DESC, d DESC, id DESC LIMIT ? OFFSET ?", (*params, take, skip)
