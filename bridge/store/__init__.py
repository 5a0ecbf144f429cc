"""The durable store: jobs and their history, inbound SMS, call events,
contacts, links, verification codes, device tokens and the webhook outbox.

- :mod:`bridge.store.model`: the records it hands out (frozen dataclasses);
- :mod:`bridge.store.protocols`: its doors, one small Protocol per concern;
- :mod:`bridge.store.schema`: tables and migrations;
- :mod:`bridge.store.sqlite`: the SQLite backend, one module per concern.

Callers import the model and the protocols; only the composition root (the
daemon, and the ``pair`` and ``doctor`` commands) names a backend.
"""
