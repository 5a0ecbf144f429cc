"""Which webhook events each account is sent: pure, from the configuration.

An account without a ``webhook_url`` is sent nothing. The inSIM GET form can
carry only what inSIM's callbacks carry (:data:`INSIM_KINDS`: no
``sms_queued`` / ``sms_dispatched``); the signed JSON form carries every
kind. The store asks :meth:`WebhookPolicy.wants` before it records an event
(it implements ``bridge.store.protocols.EventFilter``); the daemon calls
:meth:`WebhookPolicy.reload` when the configuration is reloaded.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.config import Config
from bridge.core import events

# What the inSIM GET form can carry; the JSON form carries everything.
INSIM_KINDS = frozenset({events.SMS_SENT, events.SMS_DELIVERED, events.SMS_FAILED, events.SMS_RECEIVED,
                         events.CALL_INCOMING, events.CALL_OUTGOING, events.CALL_MISSED, events.LINK_CLICKED,
                         events.CALL_QUALIFICATION})
# Notimation's webhooks: its event table (no delivery report, no calls, clicks or notes).
NOTIMATION_KINDS = frozenset({events.SMS_QUEUED, events.SMS_DISPATCHED, events.SMS_SENT, events.SMS_FAILED,
                              events.SMS_RECEIVED})
FORM_KINDS: Mapping[str, frozenset[str]] = {"insim": INSIM_KINDS, "ardary": INSIM_KINDS,
                                            "notimation": NOTIMATION_KINDS, "json": events.ALL_KINDS}


def kinds_by_account(config: Config) -> dict[str, frozenset[str]]:
    """The event kinds each account with a webhook is sent."""
    out: dict[str, frozenset[str]] = {}
    for account in config.accounts:
        if not account.webhook_url:
            continue
        kinds = FORM_KINDS.get(account.webhook_format)
        if kinds is None:  # the config loader refuses other forms; be loud if one slips through
            raise ValueError(f"account {account.login!r}: unknown webhook_format {account.webhook_format!r}")
        out[account.login] = kinds
    return out


class WebhookPolicy:
    """``wants(account, kind)``: whether the store should record that event."""

    def __init__(self, config: Config) -> None:
        self._kinds = kinds_by_account(config)

    def reload(self, config: Config) -> None:
        # One assignment: a store thread asking meanwhile sees the old map or the new one.
        self._kinds = kinds_by_account(config)

    def wants(self, account: str, kind: str) -> bool:
        kinds = self._kinds.get(account)
        return kinds is not None and kind in kinds
