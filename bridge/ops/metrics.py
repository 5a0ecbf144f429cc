"""Prometheus metrics at ``GET /metrics`` (a registry of our own, not the
process-global one, so that several daemons in one process — tests — do not collide).

Everything is read when scraped: queue depth from the store, devices from the
dispatcher, webhook counters from the deliverer's :class:`WebhookStats`; only
sends by device and result are counted as agents report them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bridge.core import jobstates as js

if TYPE_CHECKING:
    from bridge.daemon import Daemon

log = logging.getLogger(__name__)

PRIORITIES = (0, 1, 2)
# (job, state) pairs remembered per device, to count a report the agent sends
# again (its events not acked when a link was cut) once. Each is kept as the
# pair's hash: ~70 bytes instead of ~200 for the tuple and its job id (with
# 4,096 pairs a device, 20 devices held 16 MiB). Two pairs of one device's
# last 1,024 sharing a 64-bit hash would count one send less: ~1e-13.
RECENT_EVENTS = 1024


class Metrics:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=False)
        self.sends: collections.Counter[tuple[str, str]] = collections.Counter()
        self._seen: dict[str, dict[int, None]] = {}
        self._counts: dict[tuple[str, int], int] = {}
        self._outbox: dict[str, int] = {}
        self.registry.register(self)  # a custom collector

    def job_state(self, device_id: str, job_id: str, state: str) -> None:
        """The agent listener's hook: a job state reported by a device. Each
        (job, state) counts once: a report sent again is not a second send."""
        seen = self._seen.setdefault(device_id, {})
        key = hash((job_id, state))
        if key in seen:
            return
        seen[key] = None
        if len(seen) > RECENT_EVENTS:
            del seen[next(iter(seen))]  # the oldest: a dict keeps insertion order
        self.sends[(device_id, state)] += 1

    async def handler(self, request: web.Request) -> web.Response:
        store = self.daemon.store

        async def outbox() -> dict[str, int]:
            try:
                return dict(await store.outbox_counts())
            except NotImplementedError:
                return {}
        # Both at once: on PostgreSQL each is a round trip on a connection of its own.
        self._counts, self._outbox = await asyncio.gather(store.counts(), outbox())
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- the collector ------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield self._queue()
        yield from self._sends()
        yield from self._webhooks()
        yield from self._devices()

    def _queue(self) -> Metric:
        g = GaugeMetricFamily("simbridge_jobs", "Jobs in the store by state and priority "
                              "(queued ones are the queue depth)", labels=["state", "priority"])
        seen = set(self._counts) | {(state, p) for state in js.STATES for p in PRIORITIES}
        for state, priority in sorted(seen):
            g.add_metric([state, str(priority)], self._counts.get((state, priority), 0))
        return g

    def _sends(self) -> Iterator[Metric]:
        c = CounterMetricFamily("simbridge_device_job_states", "Job states reported by devices "
                                "(sent, delivered, failed, rejected, accepted)", labels=["device", "result"])
        for (device, result), n in sorted(self.sends.items()):
            c.add_metric([device, result], n)
        yield c

    def _webhooks(self) -> Iterator[Metric]:
        stats: Any = self.daemon.webhooks.stats
        for name, help_text, value in (
                ("simbridge_webhook_deliveries", "Webhook events delivered (answered 2xx)", stats.delivered),
                ("simbridge_webhook_failures", "Webhook attempts that failed (retried or given up)",
                 stats.failed_attempts),
                ("simbridge_webhook_dead", "Webhook events given up on", stats.dead),
                ("simbridge_webhook_requests", "Webhook HTTP requests made", stats.requests),
                ("simbridge_webhook_request_seconds", "Time spent in webhook HTTP requests",
                 stats.request_seconds),
                ("simbridge_webhook_latency_seconds", "Sum over delivered events of the time from "
                 "recorded to delivered (divide by deliveries for the mean)", stats.latency_seconds)):
            yield CounterMetricFamily(name, help_text, value=value)
        yield GaugeMetricFamily("simbridge_webhook_latency_max_seconds",
                                "Longest time from recorded to delivered so far", value=stats.latency_max)
        for state in ("pending", "dead"):
            if state in self._outbox:
                yield GaugeMetricFamily(f"simbridge_webhook_outbox_{state}",
                                        f"Webhook events {state} in the outbox", value=self._outbox[state] or 0)

    def _devices(self) -> Iterator[Metric]:
        d = self.daemon
        online = GaugeMetricFamily("simbridge_device_online", "1 when the device's agent is connected",
                                   labels=["device", "kind", "account"])
        signal = GaugeMetricFamily("simbridge_device_signal_percent", "Signal strength last reported",
                                   labels=["device"])
        battery = GaugeMetricFamily("simbridge_device_battery_percent", "Battery level last reported",
                                    labels=["device"])
        count = 0
        for device in d.config.devices:
            is_online = device.id in d.dispatcher.sessions
            count += is_online
            online.add_metric([device.id, device.kind, device.account], 1 if is_online else 0)
            health = d.dispatcher.health.get(device.id)
            status = health.status if health else None
            if status is not None and status.signal is not None:
                signal.add_metric([device.id], status.signal)
            if status is not None and status.battery is not None:
                battery.add_metric([device.id], status.battery)
        yield GaugeMetricFamily("simbridge_devices_online", "Devices whose agent is connected", value=count)
        yield GaugeMetricFamily("simbridge_devices_configured", "Devices in the configuration",
                                value=len(d.config.devices))
        yield online
        yield signal
        yield battery
