"""Webhooks: pure forms and signing, the HTTP transport, and the deliverer that
drains the store's outbox. ``verify`` is what a receiver of the signed JSON form
does, importable as ``bridge.webhooks.verify``."""

from bridge.webhooks.signing import sign, verify

__all__ = ["sign", "verify"]
