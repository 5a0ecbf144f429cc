"""Bulk batches judged on two cores give exactly what one core gives."""

from __future__ import annotations

from bridge.api import prepare_batch
from bridge.workers import SplitPool

from conftest import make_config, wait_until


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


def comparable(prepared):
    return [(p.index, p.errors, p.detail, p.phone_number, p.message, p.new) for p in prepared]


async def test_half_in_the_worker_process_matches_all_here(tmp_path):
    config = make_config(tmp_path)
    batch = messages(400)
    here = prepare_batch(batch, 0, config, {}, 1)
    pool = SplitPool()
    pool.start()
    try:
        await pool.split(prepare_batch, batch, config, {}, 1)  # starts the worker
        await wait_until(lambda: pool._warm is not None and pool._warm.done(), within=30, what="worker up")
        split = await pool.split(prepare_batch, batch, config, {}, 1)
    finally:
        pool.close()
    assert [p.index for p in split] == list(range(400))
    assert comparable(split) == comparable(here)
    assert sum(p.new is None for p in split) == 24  # the bad ones are judged the same way too


async def test_small_batches_and_no_worker_stay_here(tmp_path):
    config = make_config(tmp_path)
    pool = SplitPool()  # never started
    out = await pool.split(prepare_batch, messages(300), config, {}, 1)
    assert len(out) == 300 and pool._pool is None
