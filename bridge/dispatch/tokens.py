"""Per-device tokens.

A device's token is derived from a secret kept in the data folder
(``secret.key``, created once, mode 0600) and the device id, so it is stable
across restarts without being stored anywhere in clear. A ``token`` key in
the device's config takes precedence (for an agent run on another host).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


class TokenBook:
    def __init__(self, secret: bytes, fixed: dict[str, str] | None = None) -> None:
        self._secret = secret
        self._fixed = dict(fixed or {})
        self._generation: dict[str, int] = {}

    @classmethod
    def load(cls, data_dir: Path, fixed: dict[str, str] | None = None) -> TokenBook:
        path = data_dir / "secret.key"
        try:
            secret = bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            data_dir.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret.hex() + "\n")
        return cls(secret, fixed)

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose``, derived from the secret (sealed texts use one)."""
        return hmac.new(self._secret, f"key:{purpose}".encode(), hashlib.sha256).digest()

    def set_fixed(self, fixed: dict[str, str]) -> None:
        self._fixed = dict(fixed)

    def set_generation(self, device_id: str, generation: int) -> None:
        self._generation[device_id] = generation

    def token_for(self, device_id: str) -> str:
        if device_id in self._fixed:
            return self._fixed[device_id]
        gen = self._generation.get(device_id, 0)
        return hmac.new(self._secret, f"device:{device_id}:{gen}".encode(), hashlib.sha256).hexdigest()[:40]

    def verify(self, device_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token_for(device_id).encode(), token.encode())


# -- pairing tokens (``simbridge pair``): random, stored only as a digest ----------

PAIRING_PREFIX = "sbp_"


def new_pairing_token() -> str:
    """A fresh random pairing token (about 256 bits)."""
    return PAIRING_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a pairing token. The token is random and long,
    so a plain SHA-256 cannot be reversed or guessed."""
    return hashlib.sha256(token.encode()).hexdigest()
