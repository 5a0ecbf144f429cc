"""What the API needs of the store, and the only module of the API that
imports from ``bridge.store``: the record types it reads and writes, and one
small :class:`~typing.Protocol` per concern, each naming only the methods the
API calls (any backend that has them will do; the SQLite one does).

The names come from the SQLite module until the store publishes its model and
protocols in modules of their own; then this file is the one to change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from bridge.store.sqlite import Contact, Enqueued, Job, Link, NewJob, VerificationCode, new_id_sms_api

__all__ = ["CodeStore", "Contact", "Enqueued", "Job", "JobQueue", "Link", "NewJob", "RecordStore",
           "VerificationCode", "new_id_sms_api"]


class JobQueue(Protocol):
    """Outgoing jobs: queue them, read them back."""

    async def enqueue(self, account: str, jobs: list[NewJob]) -> list[Enqueued]: ...

    async def get_job(self, account: str, id_sms_api: str) -> Job | None: ...

    async def history(self, job_id: int) -> list[dict[str, Any]]: ...


class RecordStore(Protocol):
    """The account's records: opt-outs, contacts, tracked links, call notes,
    and the message list (outgoing and inbound SMS)."""

    async def opted_out(self, account: str, numbers: Iterable[str]) -> set[str]: ...

    async def upsert_contacts(self, account: str, contacts: list[Contact]) -> list[bool]: ...

    async def click(self, code: str, *, user_agent: str | None = None, ip: str | None = None) -> Link | None: ...

    async def links(self, account: str, id_sms_api: str) -> list[Link]: ...

    async def add_call_note(self, account: str, number: str, text: str, *, source: str = "interface") -> int: ...

    async def messages(self, account: str, *, direction: str | None = None, status: str | None = None,
                       take: int = 50, skip: int = 0) -> list[dict[str, Any]]: ...

    async def get_inbound(self, account: str, inbound_id: int) -> dict[str, Any] | None: ...


class CodeStore(Protocol):
    """Verification codes (hashed) and the SMS that carries each."""

    async def create_code(self, account: str, number: str, *, salt: bytes, digest: bytes, ttl_s: float,
                          max_attempts: int, job: NewJob) -> tuple[VerificationCode, Enqueued]: ...

    async def live_code(self, account: str, number: str, code_id: int | None = None) -> VerificationCode | None: ...

    async def use_code_try(self, code_id: int) -> VerificationCode | None: ...

    async def finish_code(self, code_id: int, *, verified: bool) -> bool: ...

    async def codes(self, account: str, *, code_id: int | None = None, take: int = 50,
                    skip: int = 0) -> list[VerificationCode]: ...
