"""Pages of the message list by keyset: a cursor names the last row a page
ended on, and the next page starts after it, whatever its depth (OFFSET walks
every skipped row). The order is newest first: ``created`` descending, then
outgoing before inbound, then id descending. ``skip`` stays for the clients
that use it; it is served from the keys alone, the rows read for the page
only."""

from __future__ import annotations

import re
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

    def order(self) -> tuple[float, int, int]:
        """Sort key, ascending = the list's order (newest first)."""
        return (-self.created, 0 if self.direction == OUT else 1, -self.id)


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


def page(keys: list[Key], take: int, skip: int) -> list[Key]:
    """The page's keys out of both sides' first ``take + skip`` each."""
    return sorted(keys, key=Key.order)[skip:skip + take]
