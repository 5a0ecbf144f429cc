"""Presence: each daemon's heartbeat and the devices it holds; an offline row
never hides a device online on another live daemon; a silent daemon's devices
read as offline."""

from __future__ import annotations


def by_device(rows):
    return {r["device_id"]: r for r in rows}


async def test_each_daemon_publishes_its_devices_and_reads_everyone(store):
    await store.publish_presence("box-a", [("d1", "acct", True, {"id": "d1", "battery": 80})], now=1000)
    await store.publish_presence("box-b", [("d2", "acct", False, {"id": "d2"})], now=1001)
    rows = by_device(await store.presence(stale_after=10, now=1005))
    assert rows["d1"]["node"] == "box-a" and rows["d1"]["online"] and rows["d1"]["info"]["battery"] == 80
    assert rows["d2"]["node"] == "box-b" and not rows["d2"]["online"]


async def test_an_offline_row_does_not_hide_a_device_online_elsewhere(store):
    await store.publish_presence("box-a", [("d1", "acct", True, {"id": "d1"})], now=1000)
    await store.publish_presence("box-b", [("d1", "acct", False, {"id": "d1"})], now=1001)
    assert by_device(await store.presence(stale_after=10, now=1002))["d1"]["node"] == "box-a"
    # the device moves: online on box-b wins, and box-a's later offline row does not undo it
    await store.publish_presence("box-b", [("d1", "acct", True, {"id": "d1"})], now=1003)
    await store.publish_presence("box-a", [("d1", "acct", False, {"id": "d1"})], now=1004)
    row = by_device(await store.presence(stale_after=10, now=1005))["d1"]
    assert row["node"] == "box-b" and row["online"]


async def test_a_silent_daemons_devices_read_offline(store):
    await store.publish_presence("box-a", [("d1", "acct", True, {"id": "d1"})], now=1000)
    await store.publish_presence("box-b", [], now=1030)  # box-b lives on; box-a has been silent
    row = by_device(await store.presence(stale_after=10, now=1031))["d1"]
    assert not row["online"] and not row["node_alive"] and row["node"] == "box-a"


async def test_a_daemon_reads_the_others_rows_without_its_own(store):
    await store.publish_presence("box-a", [("d1", "acct", True, {"id": "d1"})], now=1000)
    await store.publish_presence("box-b", [("d2", "acct", True, {"id": "d2"}), ("d3", "acct", False, {"id": "d3"})],
                                 now=1001)
    assert set(by_device(await store.presence(stale_after=10, now=1002, other_than="box-a"))) == {"d2", "d3"}
    assert set(by_device(await store.presence(stale_after=10, now=1002, other_than="box-b"))) == {"d1"}
    assert set(by_device(await store.presence(stale_after=10, now=1002))) == {"d1", "d2", "d3"}
