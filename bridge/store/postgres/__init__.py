"""The PostgreSQL backend (asyncpg): several daemons on one database. One
concern per module, as the SQLite backend; all share a connection pool
(:mod:`.base`), each coroutine one transaction.

================  =====================================================
``base``          the pool, migrations under an advisory lock, LISTEN
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

from bridge.store.postgres.api_tokens import PgApiTokens
from bridge.store.postgres.codes import PgCodes
from bridge.store.postgres.device_tokens import PgDeviceAuth
from bridge.store.postgres.jobs import PgJobQueue
from bridge.store.postgres.outbox import PgOutbox
from bridge.store.postgres.presence import PgPresence
from bridge.store.postgres.records import PgRecords
from bridge.store.postgres.upkeep import PgUpkeep

if TYPE_CHECKING:
    from bridge.store.protocols import ApiTokens, Codes, DeviceAuth, JobQueue, Lifecycle, Outbox, Records, Store


class PostgresStore(PgJobQueue, PgOutbox, PgRecords, PgCodes, PgDeviceAuth, PgApiTokens, PgPresence, PgUpkeep):
    """Every concern on one PostgreSQL database (:class:`bridge.store.protocols.Store`).

    ``PostgresStore("postgresql://user@host/db", event_filter=policy)``."""


__all__ = ["PgApiTokens", "PgCodes", "PgDeviceAuth", "PgJobQueue", "PgOutbox", "PgPresence", "PgRecords", "PgUpkeep",
           "PostgresStore"]

if TYPE_CHECKING:
    def _doors(store: PostgresStore, jobs: PgJobQueue, outbox: PgOutbox, records: PgRecords,
               codes: PgCodes, devices: PgDeviceAuth,
               tokens: PgApiTokens) -> tuple[Store, JobQueue, Outbox, Records, Codes, DeviceAuth, ApiTokens,
                                             Lifecycle]:
        return store, jobs, outbox, records, codes, devices, tokens, jobs
