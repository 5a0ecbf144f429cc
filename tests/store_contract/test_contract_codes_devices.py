"""Codes (verification codes and the SMS that carries each), DeviceAuth
(pairing tokens) and Lifecycle (ping, a restart keeps everything)."""

from __future__ import annotations

import hashlib

from bridge.core import jobstates as js
from bridge.store.model import CODE_DEAD, CODE_EXPIRED, CODE_PENDING, CODE_VERIFIED
from store_contract.contract_util import sms


def code_job(number: str = "+33611111111"):
    return sms(to=number, text="Your code: 123456")


async def new_code(store, *, ttl_s: float = 300, max_attempts: int = 3, account: str = "a",
                   number: str = "+33611111111"):
    return await store.create_code(account, number, salt=b"salt", digest=hashlib.sha256(b"salt123456").digest(),
                                   ttl_s=ttl_s, max_attempts=max_attempts, job=code_job(number))


async def test_a_code_is_created_with_its_sms(store):
    code, enqueued = await new_code(store)
    assert enqueued.created and enqueued.job.message == "Your code: 123456"
    assert code.id_sms_api == enqueued.job.id_sms_api and code.sms_status == js.QUEUED
    assert (code.account, code.phone_number, code.salt, code.attempts, code.max_attempts) == (
        "a", "+33611111111", b"salt", 0, 3)
    assert code.state == CODE_PENDING and code.status(code.created) == CODE_PENDING
    assert code.status(code.expires) == CODE_EXPIRED
    assert (await store.get_job("a", code.id_sms_api)).state == js.QUEUED


async def test_the_live_code_is_the_newest_pending_one(store):
    older, _ = await new_code(store)
    newer, _ = await new_code(store)
    assert (await store.live_code("a", "+33611111111")).id == newer.id
    assert (await store.live_code("a", "+33611111111", older.id)).id == older.id
    assert await store.live_code("a", "+33622222222") is None
    assert await store.live_code("b", "+33611111111") is None


async def test_tries_are_spent_before_comparison_and_run_out(store):
    code, _ = await new_code(store, max_attempts=2)
    first = await store.use_code_try(code.id)
    assert first.attempts == 1
    assert await store.finish_code(code.id, verified=False) is False
    assert (await store.live_code("a", "+33611111111")).attempts == 1
    assert (await store.use_code_try(code.id)).attempts == 2
    await store.finish_code(code.id, verified=False)
    assert await store.use_code_try(code.id) is None
    assert await store.live_code("a", "+33611111111") is None
    [listed] = await store.codes("a", code_id=code.id)
    assert listed.state == CODE_DEAD and listed.status(listed.created) == CODE_DEAD


async def test_a_verified_code_is_used_once(store):
    code, _ = await new_code(store)
    await store.use_code_try(code.id)
    assert await store.finish_code(code.id, verified=True) is True
    assert await store.finish_code(code.id, verified=True) is False
    assert await store.use_code_try(code.id) is None
    [listed] = await store.codes("a")
    assert listed.state == CODE_VERIFIED and listed.verified_at is not None


async def test_an_expired_code_takes_no_try(store):
    code, _ = await new_code(store, ttl_s=0)
    assert await store.live_code("a", "+33611111111") is None
    assert await store.use_code_try(code.id) is None


async def test_codes_are_listed_newest_first_per_account(store):
    ids = [(await new_code(store))[0].id for _ in range(3)]
    await new_code(store, account="b")
    assert [c.id for c in await store.codes("a")] == ids[::-1]
    assert [c.id for c in await store.codes("a", take=1, skip=1)] == [ids[1]]
    assert await store.codes("a", code_id=10**9) == []


async def test_pairing_tokens_live_until_revoked(store):
    assert await store.device_auth("phone-1") == (frozenset(), 0)
    await store.add_device_token("phone-1", "d" * 64)
    await store.add_device_token("phone-1", "e" * 64)
    await store.add_device_token("phone-2", "f" * 64)
    assert await store.device_auth("phone-1") == (frozenset({"d" * 64, "e" * 64}), 0)
    assert await store.revoke_device("phone-1", bump_generation=False) == 2
    assert await store.device_auth("phone-1") == (frozenset(), 0)
    assert await store.revoke_device("phone-1", bump_generation=True) == 0
    assert await store.revoke_device("phone-2", bump_generation=True) == 1
    assert await store.device_auth("phone-1") == (frozenset(), 1)
    assert await store.device_auth("phone-2") == (frozenset(), 1)


async def test_ping_answers_and_a_restart_keeps_everything(backend, sends):
    store = backend.new(sends)
    await store.open()
    await store.ping()
    [e] = await store.enqueue("a", [sms(id_sms_api="x")])
    await store.add_device_token("phone-1", "d" * 64)
    await store.close()
    store = backend.new(sends)
    await store.open()
    try:
        assert (await store.get_job("a", "x")) == e.job
        assert await store.device_auth("phone-1") == (frozenset({"d" * 64}), 0)
        assert [r["kind"] for r in await store.outbox("a")] == ["sms_queued"]
    finally:
        await store.close()
