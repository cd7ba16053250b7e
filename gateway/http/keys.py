"""Typed application state: every long-lived resource the handlers reach through `app`."""

from __future__ import annotations

from aiohttp import web

from gateway.core.limits import AuthThrottle, ConnectionGate, TokenBucket
from gateway.services.alerting import AlertService
from gateway.services.committer import GroupCommitter
from gateway.services.feed import EventFeed
from gateway.services.fhir_export import ExportPlanner
from gateway.services.hub import Hub
from gateway.services.metrics import Metrics
from gateway.services.registry import DeviceRegistry
from gateway.services.rules_sync import RulesSync
from gateway.settings import Settings
from gateway.storage.accounts import AccountStore
from gateway.storage.alerts import AlertStore
from gateway.storage.audit import AuditLog
from gateway.storage.database import Storage
from gateway.storage.fhir import FhirStore
from gateway.storage.notify import Notifications
from gateway.storage.patient_settings import PatientSettingsStore
from gateway.storage.patients import PatientStore
from gateway.storage.queries import ReadingQueries

__all__ = [
    "ACCOUNTS",
    "ALERTS",
    "ALERT_STORE",
    "AUDIT",
    "AUTH_THROTTLE",
    "COMMITTER",
    "CONNECTIONS",
    "DEVICES",
    "FEED",
    "FHIR",
    "FHIR_EXPORTS",
    "FHIR_EXPORT_PACE",
    "HUB",
    "METRICS",
    "NOTIFICATIONS",
    "PATIENTS",
    "PATIENT_SETTINGS",
    "QUERIES",
    "RULES",
    "SETTINGS",
    "STORAGE",
]

SETTINGS = web.AppKey("settings", Settings)
# The database as a whole (probes, wiring); handlers reach its parts through the keys
# below (ACCOUNTS, AUDIT, ALERT_STORE, QUERIES, PATIENTS), filled from it.
STORAGE = web.AppKey("storage", Storage)
ACCOUNTS = web.AppKey("accounts", AccountStore)
QUERIES = web.AppKey("queries", ReadingQueries)
COMMITTER = web.AppKey("committer", GroupCommitter)
DEVICES = web.AppKey("devices", DeviceRegistry)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
CONNECTIONS = web.AppKey("connections", ConnectionGate)
AUDIT = web.AppKey("audit", AuditLog)
PATIENTS = web.AppKey("patients", PatientStore)
# Patients' own settings (SpO2 scale, overrides of the ward's rules).
PATIENT_SETTINGS = web.AppKey("patient_settings", PatientSettingsStore)
AUTH_THROTTLE = web.AppKey("auth_throttle", AuthThrottle)
ALERT_STORE = web.AppKey("alert_store", AlertStore)
ALERTS = web.AppKey("alerts", AlertService)
RULES = web.AppKey("rules", RulesSync)
# Wake-ups from other replicas (one listening connection each): services `listen` on it
# while the app starts; it starts listening once they all have.
NOTIFICATIONS: web.AppKey[Notifications] = web.AppKey("notifications")
# Every alert event goes to the hub through it, local or from another replica.
FEED = web.AppKey("feed", EventFeed)
# The FHIR facade's reads and the Bulk Data export jobs this replica plans.
FHIR = web.AppKey("fhir", FhirStore)
FHIR_EXPORTS = web.AppKey("fhir_exports", ExportPlanner)
# The readings/s budget all export downloads share (`fhir_export_readings_per_s`);
# None: unpaced.
FHIR_EXPORT_PACE: web.AppKey[TokenBucket | None] = web.AppKey("fhir_export_pace")
