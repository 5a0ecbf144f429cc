"""The SQLite backend (WAL), the embedded default: one concern per module, all
sharing one connection on one thread with group commit (:mod:`.base`).

================  =====================================================
``base``          the connection, its thread, group commit, migrations
``recorder``      webhook events written into the outbox table
``jobs``          :class:`~bridge.store.protocols.JobQueue`
``outbox``        :class:`~bridge.store.protocols.Outbox`
``records``       :class:`~bridge.store.protocols.Records`
``codes``         :class:`~bridge.store.protocols.Codes`
``device_tokens`` :class:`~bridge.store.protocols.DeviceAuth`
``api_tokens``    :class:`~bridge.store.protocols.ApiTokens`
``presence``      :class:`~bridge.store.protocols.Presence`
``upkeep``        :class:`~bridge.store.protocols.Upkeep`
================  =====================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.store.sqlite.api_tokens import SqliteApiTokens
from bridge.store.sqlite.codes import SqliteCodes
from bridge.store.sqlite.device_tokens import SqliteDeviceAuth
from bridge.store.sqlite.jobs import SqliteJobQueue
from bridge.store.sqlite.outbox import SqliteOutbox
from bridge.store.sqlite.presence import SqlitePresence
from bridge.store.sqlite.records import SqliteRecords
from bridge.store.sqlite.upkeep import SqliteUpkeep

if TYPE_CHECKING:
    from bridge.store.protocols import ApiTokens, Codes, DeviceAuth, JobQueue, Lifecycle, Outbox, Records, Store


class SqliteStore(SqliteJobQueue, SqliteOutbox, SqliteRecords, SqliteCodes, SqliteDeviceAuth, SqliteApiTokens,
                  SqlitePresence, SqliteUpkeep):
    """Every concern on one SQLite database (:class:`bridge.store.protocols.Store`).

    ``SqliteStore(path, event_filter=policy, synchronous="full")``; each
    concern's class also works alone on the same database."""


__all__ = ["SqliteApiTokens", "SqliteCodes", "SqliteDeviceAuth", "SqliteJobQueue", "SqliteOutbox", "SqlitePresence",
           "SqliteRecords", "SqliteStore", "SqliteUpkeep"]

if TYPE_CHECKING:  # mypy proves the composed store, and each part, keeps its protocol
    def _doors(store: SqliteStore, jobs: SqliteJobQueue, outbox: SqliteOutbox, records: SqliteRecords,
               codes: SqliteCodes, devices: SqliteDeviceAuth,
               tokens: SqliteApiTokens) -> tuple[Store, JobQueue, Outbox, Records, Codes, DeviceAuth, ApiTokens,
                                                 Lifecycle]:
        return store, jobs, outbox, records, codes, devices, tokens, jobs
