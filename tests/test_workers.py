"""Bulk batches judged on two cores give exactly what one core gives."""

from __future__ import annotations

from conftest import make_config, wait_until

from bridge.api.judging import Rules, judge_message, normalise_batch
from bridge.api.workers import SplitPool


def messages(n: int) -> list[object]:
    out: list[object] = []
    for i in range(n):
        if i % 50 == 7:
            out.append({"phone_number": "12", "message": "bad number"})
        elif i % 50 == 8:
            out.append({"phone_number": f"+336{i:08d}", "message": "  "})
        elif i % 50 == 9:
            out.append("not an object")
        else:
            out.append({"phone_number": f"+336{i:08d}", "message": f"Bonjour n°{i} ✅", "priorite": i % 3,
                        "id_sms_api": f"k{i}"})
    return out


def numbers_of(batch):
    return [m.get("phone_number") if isinstance(m, dict) else None for m in batch]


async def test_half_in_the_worker_process_matches_all_here(tmp_path):
    raws = numbers_of(messages(400))
    here = normalise_batch(raws, 0, None)
    pool = SplitPool(processes=True)
    pool.start()
    try:
        await pool.split(normalise_batch, raws, None)  # starts the worker
        await wait_until(lambda: pool._warm is not None and pool._warm.done(), within=30, what="worker up")
        split = await pool.split(normalise_batch, raws, None)
    finally:
        pool.close()
    assert split == here
    assert sum(n is None for n, _ in split) == 16  # the bad ones are judged the same way too


async def test_by_default_no_worker_process_is_started(tmp_path):
    pool = SplitPool()
    pool.start(eager=True)
    raws = numbers_of(messages(400))
    assert await pool.split(normalise_batch, raws, None) == normalise_batch(raws, 0, None)
    assert pool._pool is None


async def test_small_batches_and_no_worker_stay_here(tmp_path):
    pool = SplitPool()  # never started
    raws = numbers_of(messages(300))
    assert await pool.split(normalise_batch, raws, None) == normalise_batch(raws, 0, None)
    assert pool._pool is None


async def test_a_daemon_batch_is_judged_the_same_with_the_worker(tmp_path):
    rules = Rules.from_config(make_config(tmp_path))
    batch = messages(400)
    raws = numbers_of(batch)
    one = [judge_message(i, m, {}, 1, rules) for i, m in enumerate(batch)]
    two = [judge_message(i, m, {}, 1, rules, c)
           for i, (m, c) in enumerate(zip(batch, normalise_batch(raws, 0, None), strict=True))]
    assert [(p.errors, p.detail, p.new) for p in one] == [(p.errors, p.detail, p.new) for p in two]
