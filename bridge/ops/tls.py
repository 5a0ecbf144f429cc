"""TLS for the agent listener and the API: contexts built from the configured
certificate and key (PEM files; a self-signed pair is fine, agents pin its
fingerprint from the pairing QR code)."""

from __future__ import annotations

import ssl
from pathlib import Path

from device_agents.pairing import certificate_fingerprint


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context; raises ValueError saying what is wrong with the files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ValueError(f"no such file: {exc.filename}") from None
    except PermissionError as exc:
        raise ValueError(f"not readable (permission denied): {exc.filename}") from None
    except ssl.SSLError as exc:
        raise ValueError(f"certificate and key do not load together ({exc.reason or exc})") from None
    return ctx


def client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly ``cert`` (for our own in-daemon
    agents and CLI, which reach the daemon on a loopback address that the
    certificate need not name)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(cert))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf certificate may be its own anchor
    return ctx


def fingerprint(cert: Path) -> str:
    """SHA-256 of the (first) certificate of a PEM file, lowercase hex."""
    return certificate_fingerprint(cert.read_text())


def optional_server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server context when both files are configured; plain TCP otherwise."""
    return server_context(cert, key) if cert is not None and key is not None else None
