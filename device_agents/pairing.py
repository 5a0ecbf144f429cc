"""Pairing URIs: how a device agent learns where its bridge is and how to log in.

``simbridge pair --device ID`` shows a QR code of::

    simbridge://pair?url=<ws:// or wss:// url>&device=<id>&token=<token>[&fp=<sha256>]

``fp`` is the SHA-256 fingerprint of the agent listener's TLS certificate
(64 hex digits; colons and case are accepted) when TLS is on: the agent pins
it instead of trusting a certificate authority, so a self-signed certificate
is fine. Stdlib only: the agents import this module on the phone.

An agent given a URI (``--pair URI``)::

    info = pairing.parse_uri(uri)                  # PairingError (a ValueError) if it is not one
    ssl_ctx = pairing.client_ssl_context(info)     # None for ws://
    async with websockets.connect(info.url, ssl=ssl_ctx) as ws:
        pairing.check_pin(ws.transport, info)      # before the hello (it carries the token)
        ...                                        # hello with device_id=info.device_id, token=info.token
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

SCHEME = "simbridge"
MAX_URI = 2048  # a QR code holds less than this anyway; a security limit for parsing
_FP = re.compile(r"^[0-9a-f]{64}$")


class PairingError(ValueError):
    """Not a usable pairing URI (or the bridge's certificate is not the pinned one)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PairingInfo:
    url: str  # ws://host:port or wss://host:port
    device_id: str
    token: str
    fingerprint: str | None = None  # lowercase hex SHA-256 of the certificate (DER), no colons

    @property
    def tls(self) -> bool:
        return self.url.startswith("wss://")


def normalize_fingerprint(value: str) -> str:
    fp = value.replace(":", "").strip().lower()
    if not _FP.match(fp):
        raise PairingError("fp: must be a SHA-256 fingerprint (64 hex digits)")
    return fp


def build_uri(*, url: str, device_id: str, token: str, fingerprint: str | None = None) -> str:
    """The URI of a QR code; raises PairingError for a bad part."""
    info = _checked(url=url, device_id=device_id, token=token,
                    fingerprint=normalize_fingerprint(fingerprint) if fingerprint else None)
    uri = (f"{SCHEME}://pair?url={quote(info.url, safe='')}&device={quote(info.device_id, safe='')}"
           f"&token={quote(info.token, safe='')}")
    if info.fingerprint:
        uri += f"&fp={info.fingerprint}"
    return uri


def parse_uri(uri: str) -> PairingInfo:
    """Read a ``simbridge://pair?...`` URI (as scanned from the QR code, surrounding
    whitespace allowed). Raises :class:`PairingError` naming what is wrong."""
    if not isinstance(uri, str):
        raise PairingError("a pairing URI must be a string")
    uri = uri.strip()
    if len(uri) > MAX_URI:
        raise PairingError(f"a pairing URI is at most {MAX_URI} characters")
    parts = urlsplit(uri)
    if parts.scheme.lower() != SCHEME or parts.netloc.lower() != "pair":
        raise PairingError(f"not a pairing URI (expected {SCHEME}://pair?url=…&device=…&token=…)")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    values: dict[str, str] = {}
    for key in ("url", "device", "token", "fp"):
        got = query.get(key, [])
        if len(got) > 1:
            raise PairingError(f"{key}: given more than once")
        if got:
            values[key] = got[0]
    for key in ("url", "device", "token"):
        if not values.get(key):
            raise PairingError(f"{key}: missing")
    fp = values.get("fp") or None
    return _checked(url=values["url"], device_id=values["device"], token=values["token"],
                    fingerprint=normalize_fingerprint(fp) if fp else None)


def _checked(*, url: str, device_id: str, token: str, fingerprint: str | None) -> PairingInfo:
    target = urlsplit(url)
    if target.scheme not in ("ws", "wss") or not target.hostname:
        raise PairingError("url: must be a ws:// or wss:// URL with a host")
    try:
        target.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise PairingError("url: bad port") from None
    if not device_id.strip() or any(c.isspace() for c in device_id):
        raise PairingError("device: must be a device id without spaces")
    if not token or any(c.isspace() for c in token):
        raise PairingError("token: must not be empty or contain spaces")
    if fingerprint and target.scheme != "wss":
        raise PairingError("fp: given for a ws:// url (a fingerprint only makes sense with wss://)")
    return PairingInfo(url=url, device_id=device_id, token=token, fingerprint=fingerprint)


def certificate_fingerprint(pem_or_der: str | bytes) -> str:
    """SHA-256 of a certificate (the first one of a PEM file, or DER bytes)."""
    if isinstance(pem_or_der, bytes) and not pem_or_der.lstrip().startswith(b"-----"):
        der = pem_or_der
    else:
        text = pem_or_der.decode() if isinstance(pem_or_der, bytes) else pem_or_der
        match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
        if not match:
            raise PairingError("no certificate in that PEM text")
        der = ssl.PEM_cert_to_DER_cert(match.group(0))
    return hashlib.sha256(der).hexdigest()


def client_ssl_context(info: PairingInfo) -> ssl.SSLContext | None:
    """The context to connect with: None for ws://; for wss:// with a pinned
    fingerprint, one that accepts any certificate — call :func:`check_pin`
    before sending anything; without a fingerprint, the system's CAs."""
    if not info.tls:
        return None
    if info.fingerprint is None:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pin below is the check
    return ctx


def check_pin(transport_or_ssl: Any, info: PairingInfo) -> None:
    """Raise PairingError unless the peer's certificate is the pinned one.
    Takes an asyncio transport (``ws.transport``) or an ``ssl.SSLObject``."""
    if info.fingerprint is None:
        return
    ssl_object = transport_or_ssl
    if hasattr(transport_or_ssl, "get_extra_info"):
        ssl_object = transport_or_ssl.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PairingError("the bridge presented no TLS certificate")
    got = hashlib.sha256(der).hexdigest()
    if not hmac.compare_digest(got, info.fingerprint):
        raise PairingError(f"the bridge's certificate {got[:16]}… is not the paired one "
                           f"{info.fingerprint[:16]}…; pair again or check for interception")
