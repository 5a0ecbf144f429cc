"""Whose request is it: the account of inSIM's body ``header`` (``login`` and
``accessKey``; the Ardary form spells it ``accesskey`` in a one-element list)
or of ``Authorization: Bearer <access key>`` (or ``Token <key>``, or an
``api_key`` parameter). Keys are compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bridge.api.bodies import insim_header
from bridge.api.errors import E_AUTH, E_DISABLED, ERROR_TEXT, ApiError
from bridge.api.settings import Settings
from bridge.config import AccountConfig

HEADER_KEY_SPELLINGS = ("accessKey", "accesskey", "access_key", "password")


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_login(self, login: Any, key: Any) -> AccountConfig | None:
        if not isinstance(login, str) or not isinstance(key, str):
            return None
        account = self.settings.config.account(login)
        if account is None:
            hmac.compare_digest(key.encode(errors="replace"), b"-" * 16)  # same work either way
            return None
        if not hmac.compare_digest(account.access_key.encode(), key.encode(errors="replace")):
            return None
        return account

    def header_account(self, header: Mapping[str, Any]) -> AccountConfig | None:
        """The account of an inSIM ``header``; None when the login or key is wrong."""
        key = next((header[k] for k in HEADER_KEY_SPELLINGS if k in header), None)
        return self.check_login(header.get("login"), key)

    def header_auth(self, body: Mapping[str, Any]) -> tuple[AccountConfig, dict[str, Any], bool]:
        """The enabled account of the body's ``header``, the header, and whether
        it came in the Ardary form; else #001 or #002, answered with HTTP 200:
        inSIM's and Ardary's clients read the code in the body (PHP's
        ``file_get_contents``, the seeds' own example, returns false on a 4xx)."""
        header, ardary = insim_header(body)
        account = self.header_account(header)
        if account is None:
            raise ApiError(200, ERROR_TEXT[E_AUTH], E_AUTH)
        if not account.enabled:
            raise ApiError(200, ERROR_TEXT[E_DISABLED], E_DISABLED)
        return account, header, ardary

    def bearer(self, request: web.Request, params: Mapping[str, Any] | None = None) -> AccountConfig:
        """Account of ``Authorization: Bearer KEY`` (or ``Token KEY``, or an
        ``api_key`` query or body parameter); else a 401."""
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.strip().partition(" ")
        key: Any = value.strip() if scheme.lower() in ("bearer", "token") else None
        if not key:
            key = request.query.get("api_key") or (params or {}).get("api_key")
        if not key or not isinstance(key, str):
            raise ApiError(401, "missing access key: send 'Authorization: Bearer <access key>'", E_AUTH)
        encoded = key.encode(errors="replace")
        for account in self.settings.config.accounts:
            if hmac.compare_digest(account.access_key.encode(), encoded):
                return account
        raise ApiError(401, "unknown access key", E_AUTH)

    def bearer_enabled(self, request: web.Request, params: Mapping[str, Any] | None = None) -> AccountConfig:
        return enabled(self.bearer(request, params))


def enabled(account: AccountConfig) -> AccountConfig:
    """``account`` if it is enabled; else a 403 (#002)."""
    if not account.enabled:
        raise ApiError(403, ERROR_TEXT[E_DISABLED], E_DISABLED)
    return account
