"""What the API needs of the store, and the only module of the API that
imports from ``bridge.store``: the record types it reads and writes (the
store's model) and the per-concern doors it goes through (the store's
protocols: any backend that implements them will do)."""

from __future__ import annotations

from bridge.store.model import (
    Contact,
    Enqueued,
    Job,
    Link,
    NewJob,
    OutboxEvent,
    StoreUnavailable,
    VerificationCode,
    new_id_sms_api,
)
from bridge.store.protocols import ApiTokens as ApiTokenStore
from bridge.store.protocols import Codes as CodeStore
from bridge.store.protocols import JobQueue, Outbox
from bridge.store.protocols import Outbox as OutboxStore
from bridge.store.protocols import Records as RecordStore

__all__ = ["ApiTokenStore", "CodeStore", "Contact", "Enqueued", "Job", "JobQueue", "Link", "NewJob", "Outbox",
           "OutboxEvent", "OutboxStore", "RecordStore", "StoreUnavailable", "VerificationCode", "new_id_sms_api"]
