"""The adb host's RSA key as adbd sees it, and the check of a token signature.

Sources (AOSP): ``libcrypto_utils/android_pubkey.cpp`` — the public key the
host sends in ``AUTH(RSAPUBLICKEY)`` is base64 of ``{u32 modulus_size_words
(64 for 2048 bits); u32 n0inv; u8 modulus[256] little-endian; u8 rr[256];
u32 exponent}``, followed by `` user@host`` and a NUL; ``adb/daemon/auth.cpp``
(``adbd_auth_verify``) — the host signs the 20-byte token with
``RSA_sign(NID_sha1, token, …)``: PKCS#1 v1.5 with a SHA-1 DigestInfo whose
"digest" is the token itself.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

ANDROID_PUBKEY_MODULUS_SIZE = 256
_KEY = struct.Struct(f"<II{ANDROID_PUBKEY_MODULUS_SIZE}s{ANDROID_PUBKEY_MODULUS_SIZE}sI")
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


class BadKey(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AdbPublicKey:
    modulus: int
    exponent: int
    comment: str
    text: str  # the base64 part, as stored in /data/misc/adb/adb_keys

    @classmethod
    def parse(cls, payload: bytes) -> AdbPublicKey:
        line = payload.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        b64, _, comment = line.partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadKey(f"not base64: {exc}") from exc
        if len(raw) != _KEY.size:
            raise BadKey(f"{len(raw)} bytes, expected {_KEY.size}")
        words, _n0inv, modulus, _rr, exponent = _KEY.unpack(raw)
        if words != ANDROID_PUBKEY_MODULUS_SIZE // 4:
            raise BadKey(f"modulus of {words} words")
        return cls(int.from_bytes(modulus, "little"), exponent, comment, b64)

    def verify(self, token: bytes, signature: bytes) -> bool:
        size = ANDROID_PUBKEY_MODULUS_SIZE
        if len(signature) != size:
            return False
        decoded = pow(int.from_bytes(signature, "big"), self.exponent, self.modulus).to_bytes(size, "big")
        suffix = b"\x00" + SHA1_DIGEST_INFO + token
        padding = size - len(suffix) - 2
        return decoded == b"\x00\x01" + b"\xff" * padding + suffix

    def fingerprint(self) -> str:
        """The MD5 fingerprint the "Allow USB debugging?" dialog shows (UsbDebuggingActivity)."""
        import hashlib
        digest = hashlib.md5(base64.b64decode(self.text), usedforsecurity=False).hexdigest().upper()
        return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
