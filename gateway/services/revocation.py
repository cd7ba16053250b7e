"""What a revocation does, whichever path made it: the REST API at once, or the watcher
for revocations written to the database by the CLI.

A revoked device's stream closes (4003) and its open alerts close in its revoker's name,
each audited as `alert.close`; a dashboard whose token was revoked or rotated, or whose
session ended, closes (4003).
"""

from __future__ import annotations

from gateway.services.alerting import AlertService
from gateway.services.hub import Hub
from gateway.services.registry import DeviceRegistry
from gateway.storage.accounts import AccountStore
from gateway.storage.audit import AuditLog
from schemas.codes import CloseCode

__all__ = ["apply_stored_revocations", "retire_device"]


async def retire_device(
    device_id: str,
    by: str,
    address: str,
    *,
    registry: DeviceRegistry,
    alerts: AlertService,
    audit: AuditLog,
) -> None:
    """Close the revoked device's stream, then its alerts (stored and pushed before this
    returns; at most once, as the alert service forgets the device)."""
    await registry.close([device_id], CloseCode.REVOKED, "revoked")
    for alert in await alerts.revoke_device(device_id, by):
        await audit.record(
            by, "alert.close", f"alert {alert.id}", address, f"device {alert.device_id} revoked"
        )


async def apply_stored_revocations(
    accounts: AccountStore,
    registry: DeviceRegistry,
    alerts: AlertService,
    hub: Hub,
    audit: AuditLog,
) -> None:
    """One check of the database: act on every revocation the gateway has not seen yet."""
    revoked = await accounts.revoked_among({*registry.device_ids(), *alerts.watched_devices()})
    for device_id, by in revoked.items():
        await retire_device(device_id, by, "cli", registry=registry, alerts=alerts, audit=audit)
    stale = await accounts.stale_credentials(hub.credentials())
    if stale:
        await hub.close_where(lambda p: p.credential in stale, CloseCode.REVOKED, "revoked")
