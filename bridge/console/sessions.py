"""Console sessions: an opaque random token in an HttpOnly cookie, kept in
memory (a restart signs everyone out), each with its own CSRF token that
every state-changing request must carry (``X-CSRF-Token`` header or a
``csrf`` form field). Before sign-in, a short-lived pre-session token guards
the sign-in form the same way (double submit: cookie and field must match).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "simbridge_console"
PRE_COOKIE = "simbridge_console_pre"
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    login: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._by_token: dict[str, Session] = {}

    def create(self, login: str) -> tuple[str, Session]:
        self._sweep()
        if len(self._by_token) >= MAX_SESSIONS:  # a bound: drop the oldest
            oldest = min(self._by_token, key=lambda t: self._by_token[t].expires)
            del self._by_token[oldest]
        token = secrets.token_urlsafe(32)
        session = Session(login, secrets.token_urlsafe(24), time.time() + self.ttl)
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = time.time()
        if session.expires <= now:
            del self._by_token[token]
            return None
        session.expires = now + self.ttl  # sliding
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def _sweep(self) -> None:
        now = time.time()
        for token in [t for t, s in self._by_token.items() if s.expires <= now]:
            del self._by_token[token]


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens, False when either is missing."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())
