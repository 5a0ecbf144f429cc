"""How the API says no: :class:`ApiError` (raised by any handler, written out
by the app's error middleware) and the error codes of each product's tables.
Pure: no aiohttp here, so that :mod:`bridge.api.judging` can use the codes."""

from __future__ import annotations

from typing import Any

# inSIM / Ardary error codes of sendsms (seed 003).
E_AUTH = "#001"
E_DISABLED = "#002"
E_OPTED_OUT = "#003"
E_FORBIDDEN = "#004"
E_EMPTY = "#006"
E_NUMBER = "#007"
E_UNKNOWN = "#009"
# An id_sms_api sent again with another number or text: Ardary's table has no
# code of its own for it, so its clients see #009 with the reason in error_message.
E_REUSED = E_UNKNOWN
ERROR_TEXT = {
    E_AUTH: "Authentification failed",
    E_DISABLED: "Your account is not activated yet!",
    E_OPTED_OUT: "This phone number asked for stop",
    E_FORBIDDEN: "Your sms text contains forbidden words",
    E_EMPTY: "Your sms has an empty content",
    E_NUMBER: "The phone number is invalid",
    E_UNKNOWN: "Unknown error",
}

# Contact error codes (seeds 000, 001, 003): another table.
C_INVALID = "#001"
C_EMPTY = "#002"
C_MISSING = "#003"
C_EMAIL = "#004"
CONTACT_ERROR_TEXT = {C_INVALID: "Invalid phone number", C_EMPTY: "Empty phone number",
                      C_MISSING: "phone_number variable not found", C_EMAIL: "Invalid email"}

# Click-to-call error codes (seed 000).
CALL_UNAVAILABLE = "#001"
CALL_NOT_CONNECTED = "#002"


class ApiError(Exception):
    """A refusal: HTTP ``status``, a ``message`` for people, an error ``code``
    from the tables above, and any ``extra`` fields of the answer. Written as
    ``{"status": "error", "message": …, "error": [code], **extra}``."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "error", "message": self.message}
        if self.code:
            body["error"] = [self.code]
        body.update(self.extra)
        return body
