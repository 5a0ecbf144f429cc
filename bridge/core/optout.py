"""Opt-out keywords: an incoming SMS that *is* STOP (or ARRET, UNSUBSCRIBE…)
opts its sender out of the account's messages; START opts it back in.

Pure code, shared by the config (defaults) and the store (which applies the
keywords in the same transaction that records the incoming SMS).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

DEFAULT_STOP_WORDS: tuple[str, ...] = ("STOP", "STOPALL", "ARRET", "ARRÊT", "UNSUBSCRIBE", "DESABONNER",
                                       "DÉSABONNER", "CANCEL", "END", "QUIT")
DEFAULT_START_WORDS: tuple[str, ...] = ("START", "UNSTOP")

OPT_OUT = "opt_out"
OPT_IN = "opt_in"


def keyword(text: str) -> str:
    """The comparable form of a message or a keyword: no accents, no case, no
    surrounding blanks or punctuation (``" Arrêt ! "`` → ``"arret"``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().strip(" \t\r\n.!?;:,-_*\"'()[]").split())


class Keywords:
    """The stop and start words of a daemon, ready to match incoming SMS."""

    def __init__(self, stop: Iterable[str] = DEFAULT_STOP_WORDS,
                 start: Iterable[str] = DEFAULT_START_WORDS) -> None:
        self.stop = frozenset(keyword(w) for w in stop) - {""}
        self.start = frozenset(keyword(w) for w in start) - {""}

    def classify(self, text: str) -> str | None:
        """``OPT_OUT``, ``OPT_IN`` or None (an ordinary message)."""
        if len(text) > 64:
            return None
        word = keyword(text)
        if word in self.stop:
            return OPT_OUT
        if word in self.start:
            return OPT_IN
        return None
