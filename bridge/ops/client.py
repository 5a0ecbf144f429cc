"""The command line's way to the running daemon's HTTP API (urllib, no event loop)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from bridge.config import Config
from bridge.ops.tls import client_context


class DaemonUnreachable(OSError):
    """Nothing answers at the configured API address."""


class DaemonError(RuntimeError):
    """The daemon answered with an error status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the daemon answered {status}: {detail}")
        self.status = status
        self.detail = detail


def api_base(config: Config) -> str:
    host, port = config.api.listen
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.api.tls_cert else "http"
    return f"{scheme}://{host}:{port}"


def _context(config: Config) -> ssl.SSLContext | None:
    return client_context(config.api.tls_cert) if config.api.tls_cert else None


def request(config: Config, method: str, path: str, *, key: str | None = None, body: Any = None,
            timeout: float = 15.0, raw: bool = False) -> Any:
    """JSON in, JSON out (or the body as text with ``raw``)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(api_base(config) + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_context(config)) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        raise DaemonError(exc.code, exc.read().decode(errors="replace")) from None
    except urllib.error.URLError as exc:
        raise DaemonUnreachable(f"cannot reach the daemon at {api_base(config)} ({exc.reason})") from None
    except (ConnectionError, TimeoutError) as exc:
        raise DaemonUnreachable(f"cannot reach the daemon at {api_base(config)} ({exc})") from None
    return payload.decode() if raw else json.loads(payload)


def devices(config: Config) -> list[dict[str, Any]]:
    """Every configured device as the daemon sees it (GET /api/v1/devices, per account)."""
    rows: list[dict[str, Any]] = []
    seen: set[tuple[Any, Any]] = set()
    for account in config.accounts:
        for row in request(config, "GET", "/api/v1/devices", key=account.access_key)["data"]:
            key = (row.get("id"), row.get("serial"))  # unconfigured phones have no id, only a serial
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def store_fault(config: Config) -> str | None:
    """Why the running daemon's store takes no writes (its ``/healthz`` answers
    503 with ``store``), or None when it does."""
    try:
        request(config, "GET", "/healthz", timeout=5)
    except DaemonError as exc:
        if exc.status != 503:
            raise
        try:
            return str(json.loads(exc.detail)["store"])
        except (ValueError, KeyError, TypeError):
            return exc.detail
    return None
