"""Prometheus metrics, one registry per app (so test apps never collide), exposed at
`/metrics`. Names are prefixed `vitals_`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics", "metrics_handler"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.device_connections = Gauge(
            "vitals_device_connections", "Open device streams", registry=r
        )
        self.dashboard_connections = Gauge(
            "vitals_dashboard_connections", "Open dashboard streams", registry=r
        )
        self.readings_accepted = Counter(
            "vitals_readings_accepted", "Readings committed to the database", registry=r
        )
        self.readings_rejected = Counter(
            "vitals_readings_rejected",
            "Readings or frames refused, by reason",
            ["reason"],
            registry=r,
        )
        self.batches_committed = Counter(
            "vitals_batches_committed", "Batches committed (duplicates excluded)", registry=r
        )
        self.commit_seconds = Histogram(
            "vitals_commit_seconds",
            "Duration of one group-commit transaction",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ack_seconds = Histogram(
            "vitals_ack_latency_seconds",
            "From receiving a batch to sending its ack",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts_raised = Counter(
            "vitals_alerts_raised", "Alerts raised", ["rule", "priority"], registry=r
        )
        self.dashboard_drops = Counter(
            "vitals_dashboard_queue_drops",
            "Dashboards closed because their outgoing queue overflowed",
            registry=r,
        )
        self.auth_failures = Counter(
            "vitals_auth_failures", "Refused credentials", ["kind"], registry=r
        )

    def track_connections(self, devices: Callable[[], int], dashboards: Callable[[], int]) -> None:
        self.device_connections.set_function(devices)
        self.dashboard_connections.set_function(dashboards)


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        del request
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    return handler
