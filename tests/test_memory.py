"""What the daemon keeps resident stays small and bounded (bench.memory gives the whole figure)."""

from __future__ import annotations

import tracemalloc

from bridge.ops.metrics import RECENT_EVENTS, Metrics


class _Registryless:
    """Metrics reads the daemon only when scraped."""


def _metrics() -> Metrics:
    return Metrics(_Registryless())  # type: ignore[arg-type]


def test_a_report_sent_again_counts_once():
    metrics = _metrics()
    metrics.job_state("sim-1", "job-1", "sent")
    metrics.job_state("sim-1", "job-1", "sent")  # the agent sent it again: its ack was lost
    metrics.job_state("sim-1", "job-1", "delivered")
    metrics.job_state("sim-2", "job-1", "sent")  # another device's job of the same id
    assert metrics.sends == {("sim-1", "sent"): 1, ("sim-1", "delivered"): 1, ("sim-2", "sent"): 1}


def test_repeats_within_the_remembered_reports_count_once_and_the_memory_is_bounded():
    metrics = _metrics()
    for i in range(RECENT_EVENTS):
        metrics.job_state("sim-1", f"job-{i}", "sent")
    for i in range(RECENT_EVENTS):  # every one of the last RECENT_EVENTS again
        metrics.job_state("sim-1", f"job-{i}", "sent")
    assert metrics.sends[("sim-1", "sent")] == RECENT_EVENTS
    for i in range(RECENT_EVENTS, 10 * RECENT_EVENTS):
        metrics.job_state("sim-1", f"job-{i}", "sent")
    assert metrics.sends[("sim-1", "sent")] == 10 * RECENT_EVENTS
    assert len(metrics._seen["sim-1"]) == RECENT_EVENTS


def test_twenty_busy_devices_hold_little_for_the_send_counters():
    """At steady state (every device's memory of recent reports full), the
    counters of 20 devices hold under 3 MiB (they held 16 MiB)."""
    metrics = _metrics()
    # Job ids as the store makes them (20 characters), made before tracing: the
    # reports' own strings are the frames', freed once counted.
    ids = [f"{i:020d}" for i in range(2100)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for device in range(20):
            for job_id in ids:
                for state in ("sent", "delivered"):
                    metrics.job_state(f"phone-{device}", job_id, state)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 3 * 2**20, f"{held / 2**20:.1f} MiB"
