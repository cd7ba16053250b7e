"""Prometheus metrics, one registry per app (so test apps never collide), exposed at
`/metrics`. The gateway's own names are prefixed `vitals_`; the process, platform and
garbage-collector collectors add the usual `process_*` and `python_*`.

Every labelled series whose label values are known in advance (rejection reasons, auth
failure kinds, open alerts by priority and status) is exported from the start, at 0, so
that `rate()` and alerting rules see the first increment instead of a new series.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.core.rules import Priority
from schemas.codes import AlertStatus, DeviceErrorCode, ProblemCode

__all__ = [
    "AUTH_FAILURE_KINDS",
    "OPEN_ALERT_STATUSES",
    "REJECT_REASONS",
    "Metrics",
    "gateway_version",
    "metrics_handler",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# `vitals_readings_rejected_total{reason}`: every error code a device can be sent for a
# batch or frame (schemas.codes.DeviceErrorCode), and an ack for an already stored seq.
REJECT_REASONS = (*(code.value for code in DeviceErrorCode), "duplicate_batch")
AUTH_FAILURE_KINDS = (ProblemCode.UNAUTHORIZED.value, ProblemCode.FORBIDDEN.value)
# An alert is open until it is cleared and acknowledged.
OPEN_ALERT_STATUSES = tuple(s.value for s in AlertStatus if s is not AlertStatus.CLEARED_ACK)

# (priority, status) of every open alert, read at scrape time.
OpenAlerts = Callable[[], Iterable[tuple[str, str]]]


def gateway_version() -> str:
    """The installed package's version (a source tree that is not installed: unknown)."""
    try:
        return version("vitals-gateway")
    except PackageNotFoundError:
        return "unknown"


class _OpenAlertsCollector(Collector):
    """`vitals_open_alerts{priority,status}`, counted from the alert engine at scrape
    time: a gauge kept up to date on every transition would be one more thing for
    each transition to get right, and a scrape every 15 s costs one pass over the
    open alerts."""

    def __init__(self) -> None:
        self.source: OpenAlerts | None = None

    def _family(self, counts: Tally[tuple[str, str]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "vitals_open_alerts",
            "Alerts not yet closed (cleared and acknowledged), by priority and status",
            labels=["priority", "status"],
        )
        for priority in Priority:
            for status in OPEN_ALERT_STATUSES:
                family.add_metric([priority.value, status], counts[priority.value, status])
        return family

    def describe(self) -> Iterable[Metric]:
        return [self._family(Tally())]

    def collect(self) -> Iterable[Metric]:
        counts: Tally[tuple[str, str]] = Tally(self.source() if self.source else ())
        return [self._family(counts)]


class Metrics:
    def __init__(self, *, replica: str) -> None:
        """`replica`: this process's name among the gateway's replicas (setting
        `replica_id`), a label of `vitals_build_info`: each replica is scraped directly."""
        # Process-global, and idempotent: without it every counter and histogram has a
        # `_created` twin that Prometheus does not use and that doubles the exposition.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # registers nothing off CPython
        Info("vitals_build", "The running gateway's version and replica", registry=r).info(
            {"version": gateway_version(), "replica": replica}
        )
        self.http_seconds = Histogram(
            "vitals_http_request_duration_seconds",
            "HTTP requests by method, route template (`unmatched` for none) and status; "
            "WebSocket streams are not requests of this kind and are not counted",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alert_push_seconds = Histogram(
            "vitals_alert_push_seconds",
            "From the arrival of the batch that raised an alert to the push of the "
            "alert's event to the dashboards (stored first)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._open_alerts = _OpenAlertsCollector()
        r.register(self._open_alerts)
        self.device_connections = Gauge(
            "vitals_device_connections", "Open device streams", registry=r
        )
        self.dashboard_connections = Gauge(
            "vitals_dashboard_connections", "Open dashboard streams", registry=r
        )
        self.dashboard_sse_connections = Gauge(
            "vitals_dashboard_sse_connections",
            "Open dashboard streams that are Server-Sent Events (of all dashboards)",
            registry=r,
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
        for reason in REJECT_REASONS:
            self.readings_rejected.labels(reason)
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
        self.readings_expired = Counter(
            "vitals_readings_expired",
            "Readings deleted row by row by retention (SQLite; PostgreSQL's DEFAULT partition)",
            registry=r,
        )
        self.partitions_dropped = Counter(
            "vitals_reading_partitions_dropped",
            "Day partitions of readings dropped whole by retention (PostgreSQL)",
            registry=r,
        )
        self.auth_failures = Counter(
            "vitals_auth_failures", "Refused credentials", ["kind"], registry=r
        )
        for kind in AUTH_FAILURE_KINDS:
            self.auth_failures.labels(kind)

    def track_connections(
        self,
        devices: Callable[[], int],
        dashboards: Callable[[], int],
        sse: Callable[[], int] = lambda: 0,
    ) -> None:
        self.device_connections.set_function(devices)
        self.dashboard_connections.set_function(dashboards)
        self.dashboard_sse_connections.set_function(sse)

    def track_open_alerts(self, source: OpenAlerts) -> None:
        """Count open alerts from `source` at every scrape."""
        self._open_alerts.source = source


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        del request
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    return handler
