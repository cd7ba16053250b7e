"""The application factory: `create_app(settings)` wires resources, routes and tasks.

Every long-lived resource (the storage, readings' retention, the alert service, the
group committer and vitals publisher, background checks) is opened and closed in
`cleanup_ctx`, in dependency order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.core.limits import AuthThrottle, ConnectionGate
from gateway.http import (
    accounts,
    alerts,
    asyncapi,
    audit,
    fhir,
    health,
    openapi,
    patient_settings,
    patients,
    readings,
    reports,
    session,
)
from gateway.http.dashboard_sse import dashboard_events
from gateway.http.dashboard_stream import dashboard_stream
from gateway.http.device_stream import device_stream
from gateway.http.keys import (
    ACCOUNTS,
    ALERT_STORE,
    ALERTS,
    AUDIT,
    AUTH_THROTTLE,
    COMMITTER,
    CONNECTIONS,
    DEVICES,
    FEED,
    FHIR,
    FHIR_EXPORT_PACE,
    FHIR_EXPORTS,
    HUB,
    METRICS,
    NOTIFICATIONS,
    PATIENT_SETTINGS,
    PATIENTS,
    QUERIES,
    RULES,
    SETTINGS,
    STORAGE,
)
from gateway.http.observe import add_request_id_header, observe_middleware
from gateway.http.problems import error_middleware
from gateway.http.proxy import forwarded_middleware
from gateway.http.web import routes as web_routes
from gateway.services.alerting import AlertService
from gateway.services.committer import GroupCommitter
from gateway.services.feed import EventFeed
from gateway.services.fhir_export import ExportPlanner
from gateway.services.hub import SSE, Hub
from gateway.services.metrics import Metrics, metrics_handler
from gateway.services.ownership import Ownership
from gateway.services.registry import DeviceRegistry
from gateway.services.retention import RetentionService
from gateway.services.revocation import apply_stored_revocations
from gateway.services.rules_sync import RulesSync
from gateway.services.vitals import VitalsPublisher
from gateway.settings import Settings
from gateway.storage.database import open_storage
from gateway.storage.fhir import FhirStore
from gateway.storage.notify import CHANNEL_DEVICES
from gateway.storage.owners import OwnerStore
from gateway.storage.patient_settings import PatientSettingsStore
from gateway.storage.rules_store import RulesStore
from schemas.codes import CloseCode

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    # Outermost first: the access line and histogram see the error middleware's answer.
    middlewares: list[Middleware] = [observe_middleware, error_middleware]
    if settings.trusted_proxies:
        # Before all: every later step sees the client behind the proxy, not the proxy.
        middlewares.insert(0, forwarded_middleware(settings.trusted_proxies))
    app = web.Application(middlewares=middlewares)
    app.on_response_prepare.append(add_request_id_header)
    app[SETTINGS] = settings
    app[DEVICES] = DeviceRegistry()
    app[METRICS] = metrics = Metrics(replica=settings.replica)
    app[CONNECTIONS] = ConnectionGate(settings.max_connections)
    app[AUTH_THROTTLE] = AuthThrottle()
    # One budget for every export download of the process (http/fhir.py, export_pace).
    pace = fhir.export_pace(settings.fhir_export_readings_per_s, time.monotonic())
    app[FHIR_EXPORT_PACE] = pace
    app[HUB] = Hub(on_drop=metrics.dashboard_drops.inc)
    metrics.track_connections(
        lambda: len(app[DEVICES]), lambda: len(app[HUB]), lambda: app[HUB].count(SSE)
    )
    # The committer stops before the alert service, which then stores what it left (and
    # publishes it through the feed, still running). The rules follower applies rules
    # through the committer, so it runs while that does; listening starts last, once
    # every listener (feed, vitals, rules, registry, alerts) is registered, and stops
    # first.
    app.cleanup_ctx.extend(
        [
            _storage,
            _retention,
            _feed,
            _alerts,
            _committer,
            _rules,
            _stream_watchers,
            _fhir_exports,
            _listening,
        ]
    )
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/v1/devices/stream", device_stream)
    app.router.add_get("/v1/dashboard/stream", dashboard_stream)
    app.router.add_get("/v1/dashboard/events", dashboard_events)
    app.router.add_routes(alerts.routes)
    app.router.add_routes(accounts.routes)
    app.router.add_routes(health.routes)
    app.router.add_get("/metrics", metrics_handler(metrics))
    app.router.add_routes(session.routes)
    app.router.add_routes(audit.routes)
    app.router.add_routes(readings.routes)
    app.router.add_routes(reports.routes)
    app.router.add_routes(patients.routes)
    app.router.add_routes(patient_settings.routes)
    app.router.add_routes(fhir.routes)
    app.router.add_routes(openapi.routes)
    app.router.add_routes(asyncapi.routes)
    app.router.add_routes(web_routes)
    return app


async def _storage(app: web.Application) -> AsyncIterator[None]:
    """The database (pending migrations applied under its lock, or refused when
    auto_migrate is off) and every store on it; closed last, after the committer and
    the alert service stored what they had."""
    app[STORAGE] = storage = await open_storage(app[SETTINGS])
    app[ACCOUNTS] = storage.accounts
    app[AUDIT] = storage.audit
    app[ALERT_STORE] = storage.alerts
    app[QUERIES] = storage.queries
    app[PATIENTS] = storage.patients
    app[PATIENT_SETTINGS] = PatientSettingsStore(storage.engine)
    app[NOTIFICATIONS] = notifications = storage.notifications()
    app[DEVICES].fence_with(storage.epochs)
    registry = app[DEVICES]
    notifications.listen(CHANNEL_DEVICES, registry.newer_epoch, registry.catch_up)
    yield
    await storage.close()


async def _fhir_exports(app: web.Application) -> AsyncIterator[None]:
    """The FHIR facade's reads, and the planner of Bulk Data exports (its jobs are rows:
    one cut short by a stop is taken over by the next poll, here or on a replica)."""
    app[FHIR] = store = FhirStore(app[STORAGE].engine, retention_days=app[SETTINGS].retention_days)
    file_readings = app[SETTINGS].fhir_export_file_readings
    async with ExportPlanner.running(store, file_readings=file_readings) as planner:
        app[FHIR_EXPORTS] = planner
        yield


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """Readings' retention: today's partitions made before the first commit, then old
    days removed at start and hourly (services/retention.py)."""
    async with RetentionService.running(
        app[STORAGE].retention, app[SETTINGS].retention_days, metrics=app[METRICS]
    ):
        yield


async def _committer(app: web.Application) -> AsyncIterator[None]:
    """The group committer, with the alert service as its partner (alert events go into
    the commits) and the vitals publisher told of each commit's batches."""
    settings = app[SETTINGS]
    async with VitalsPublisher.running(
        app[HUB], app[NOTIFICATIONS], news2=app[ALERTS].news2
    ) as vitals:
        committer = GroupCommitter(
            app[STORAGE].readings,
            max_rows=settings.commit_max_rows,
            delay_s=settings.commit_delay_ms / 1000,
            max_pending_rows=settings.max_pending_rows,
            partner=app[ALERTS],
            observers=[vitals],
            metrics=app[METRICS],
        )
        committer.start()
        app[COMMITTER] = committer
        yield
        # Streams had the first half of the grace period to settle (see _close_streams).
        await committer.stop(within=settings.shutdown_grace_s / 2)


async def _feed(app: web.Application) -> AsyncIterator[None]:
    """The event feed: the hub resumes after the newest stored event, and every event
    (this replica's, just committed, or another's, read from the table) reaches it in
    id order; set up before the alert service, whose restore publishes through it."""
    async with EventFeed.running(app[HUB], app[ALERT_STORE], app[NOTIFICATIONS]) as feed:
        app[FEED] = feed
        yield


async def _listening(app: web.Application) -> AsyncIterator[None]:
    """Hear the other replicas (LISTEN on PostgreSQL; nothing to hear on SQLite): started
    after every listener registered, stopped before the committer and the feed."""
    notifications = app[NOTIFICATIONS]
    await notifications.start()
    yield
    await notifications.stop()


async def _alerts(app: web.Application) -> AsyncIterator[None]:
    """The alert service: rules, restored open alerts, the timer; its events are stored
    in the commits of the committer, set up next."""
    settings = app[SETTINGS]
    storage = app[STORAGE]
    # Replicas sharing the database each evaluate the patients they own (leases).
    ownership = Ownership(OwnerStore(storage.engine), settings.replica) if storage.shared else None
    async with AlertService.running(
        app[ALERT_STORE],
        app[HUB],
        settings.rules_path,
        feed=app[FEED],
        offline_after_s=settings.offline_after_s,
        max_silence_s=settings.max_silence_s,
        metrics=app[METRICS],
        ownership=ownership,
        wakeups=app[NOTIFICATIONS],
        patients=storage.patients,
        news2_window_s=settings.news2_window_s,
        settings=app[PATIENT_SETTINGS],
    ) as service:
        app[ALERTS] = service
        yield


async def _rules(app: web.Application) -> AsyncIterator[None]:
    """This replica's rules file published as every replica's rules, then the cluster's
    rules followed (services/rules_sync.py)."""
    settings = app[SETTINGS]
    async with RulesSync.running(
        RulesStore(app[STORAGE].engine),
        app[ALERTS],
        app[NOTIFICATIONS],
        settings.rules_path,
        settings.replica,
    ) as sync:
        app[RULES] = sync
        yield


async def _stream_watchers(app: web.Application) -> AsyncIterator[None]:
    """Act on revocations made behind the gateway's back (the CLI on the database), and
    drop device streams whose peer stopped answering (core/liveness.py)."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].revocation_check_s)
            try:
                await apply_stored_revocations(
                    app[ACCOUNTS], app[DEVICES], app[ALERTS], app[HUB], app[AUDIT]
                )
            except Exception:
                log.exception("revocation check failed")

    tasks = [
        asyncio.create_task(watch(), name="revocation-watch"),
        asyncio.create_task(
            app[DEVICES].watch_liveness(app[SETTINGS].heartbeat_s), name="liveness-watch"
        ),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_streams(app: web.Application) -> None:
    # Half the grace period for streams to settle, half for the committer to finish.
    await app[DEVICES].close_all(
        CloseCode.GOING_AWAY, "going away", grace_s=app[SETTINGS].shutdown_grace_s / 2
    )
    await app[HUB].close_all(CloseCode.GOING_AWAY, "going away")
