"""Alert events as the gateway sends them, for the watcher's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)


def alert_event(
    event_id: int,
    alert_id: int,
    *,
    status: str = "active_unack",
    priority: str = "high",
    raised: float | None = None,
    patient: str = "p-017",
    last: float = 87.0,
) -> dict[str, Any]:
    """An spo2-low alert event; `raised` is seconds after T0 (default: the alert id)."""
    raised_at = T0 + timedelta(seconds=alert_id if raised is None else raised)
    acked = status.endswith("_ack")
    cleared = status.startswith("cleared")
    return {
        "type": "alert",
        "event_id": event_id,
        "alert": {
            "id": alert_id,
            "rule": "spo2-low",
            "metric": "spo2",
            "priority": priority,
            "status": status,
            "patient_id": patient,
            "device_id": "watch-001",
            "ward": "icu",
            "threshold": 92,
            "direction": "below",
            "first_value": 89,
            "last_value": last,
            "worst_value": 86,
            "raised_at": raised_at.isoformat(),
            "updated_at": (raised_at + timedelta(seconds=event_id)).isoformat(),
            "cleared_at": raised_at.isoformat() if cleared else None,
            "acked_at": raised_at.isoformat() if acked else None,
            "acked_by": "dr-lee" if acked else None,
        },
    }
