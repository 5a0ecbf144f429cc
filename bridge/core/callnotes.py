"""Call notes from the phone: the person holding an account's phone qualifies
a call by sending an SMS to the gateway's own number, from a number the
account lists in ``call_note_senders``, written

    NOTE <number called or calling>: <the note>

(``NOTE +33612345678: Interested customer - callback next week``; the keyword
is case-insensitive, ``QUALIF`` works too; a national number is read in
``api.default_region``). Such an SMS is a call note, not an inbound SMS: it is
stored as a note from the mobile and reaches the CRM as
``call_qualification_from_mobile``. Anything else from those numbers stays an
ordinary inbound SMS. Pure: the agent listener applies it to what devices report."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from bridge.core import numbers
from device_agents import protocol

NOTE_RE = re.compile(r"\s*(?:NOTE|QUALIF)\s+(\+?[0-9][0-9 .\-()]{3,24}?)\s*:\s*(\S.*)", re.IGNORECASE | re.DOTALL)


def as_note(event: protocol.SmsReceived, senders: Collection[str], region: str | None) -> protocol.CallNote | None:
    """The call note an inbound SMS is, or None when it is an ordinary SMS."""
    if not senders or event.incomplete:
        return None
    found = NOTE_RE.fullmatch(event.text)
    if found is None or numbers.normalise_or_keep(event.sender, region) not in senders:
        return None
    try:
        number = numbers.normalise(found.group(1), region)
    except ValueError:
        return None
    return protocol.CallNote(event_id=event.event_id, number=number, text=found.group(2).strip(), at=event.at)


def rewrite(events: Iterable[protocol.Event], senders: Collection[str], region: str | None) -> list[protocol.Event]:
    """``events`` with each inbound SMS that is a call note turned into that note (same event id)."""
    out: list[protocol.Event] = []
    for ev in events:
        note = as_note(ev, senders, region) if isinstance(ev, protocol.SmsReceived) else None
        out.append(note if note is not None else ev)
    return out
