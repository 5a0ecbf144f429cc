"""Signatures of the JSON form (pure).

``X-Simbridge-Signature: sha256=<hex>`` is HMAC-SHA256, keyed with the
account's ``webhook_secret``, of ``"<timestamp>.<raw body>"``, where the
timestamp is ``X-Simbridge-Timestamp`` (Unix seconds of the attempt). A
receiver checks the signature in constant time and refuses old timestamps, so
that a captured request cannot be replayed (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Simbridge-Signature"
TIMESTAMP_HEADER = "X-Simbridge-Timestamp"
EVENT_HEADER = "X-Simbridge-Event"
EVENT_ID_HEADER = "X-Simbridge-Event-Id"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with the secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)
