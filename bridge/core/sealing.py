"""Sealed texts: a job's real text kept in the store only encrypted, under a
key that is not in the store (derived from the daemon's ``secret.key``), so
that a copy of the database alone does not reveal it. Verification codes use
it: the job's ``message`` is the text with the code masked, what every read
side shows; the real text is opened only when the job is pushed to a device.

Standard library only: encrypt-then-MAC with HMAC-SHA256 as the PRF (a
counter-mode key stream, then a tag over version, nonce, associated data and
ciphertext). A blob is ``version (1) | nonce (16) | ciphertext | tag (16)``.
The associated data (the destination number) binds a sealed text to its job:
moved to another number, it no longer opens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

VERSION = b"\x01"
NONCE_BYTES = 16
TAG_BYTES = 16
MASK_CHAR = "*"  # in the GSM 7-bit default alphabet: the masked text counts as the real one


class SealError(ValueError):
    """A sealed text that does not open: another key (``secret.key`` changed),
    another destination, or damaged bytes."""


def _prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a sealing key needs at least 16 bytes")
        self._enc = _prf(key, b"simbridge sealed text: encryption")
        self._mac = _prf(key, b"simbridge sealed text: authentication")

    @classmethod
    def ephemeral(cls) -> Sealer:
        """A sealer whose key lives only in this process (what it seals opens nowhere else)."""
        return cls(secrets.token_bytes(32))

    def _stream(self, nonce: bytes, length: int) -> bytes:
        blocks = (length + 31) // 32
        return b"".join(_prf(self._enc, nonce + i.to_bytes(4, "big")) for i in range(blocks))[:length]

    def _tag(self, nonce: bytes, associated: bytes, ciphertext: bytes) -> bytes:
        data = VERSION + nonce + len(associated).to_bytes(4, "big") + associated + ciphertext
        return _prf(self._mac, data)[:TAG_BYTES]

    def seal(self, text: str, associated: str = "") -> bytes:
        plain = text.encode()
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = bytes(a ^ b for a, b in zip(plain, self._stream(nonce, len(plain)), strict=True))
        return VERSION + nonce + ciphertext + self._tag(nonce, associated.encode(), ciphertext)

    def open(self, blob: bytes, associated: str = "") -> str:
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[:1] != VERSION:
            raise SealError("not a sealed text this version of simbridge reads")
        nonce, ciphertext, tag = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:-TAG_BYTES], blob[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(nonce, associated.encode(), ciphertext)):
            raise SealError("the sealed text does not open with this daemon's key (secret.key changed?) "
                            "or was altered")
        plain = bytes(a ^ b for a, b in zip(ciphertext, self._stream(nonce, len(ciphertext)), strict=True))
        return plain.decode()
