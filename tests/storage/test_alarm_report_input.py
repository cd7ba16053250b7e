"""`AlertStore.report_input` on SQLite and PostgreSQL: which alerts a report window
takes, their silence and escalation events, the hours with readings, and the ward
filter; rows stored through the real readings and events writers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.alarm_report import HOUR_S
from gateway.settings import load_settings
from gateway.storage.database import Storage, open_storage
from gateway.storage.readings import SeqAdvance
from tests.support.postgres import fresh_database
from tests.support.storage_helpers import alert_row, event

# A window a day long, ending at a whole hour (the hours are counted from `since`).
UNTIL = 1_790_000_000.0 - 1_790_000_000.0 % HOUR_S
SINCE = UNTIL - 24 * HOUR_S


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Storage on a new database of each backend, with devices watch-1 (p-1, icu) and
    watch-2 (p-2, ward-b)."""
    if request.param == "sqlite":
        url_cm = None
        url = f"sqlite+aiosqlite:///{tmp_path / 'vitals.db'}"
    else:
        url_cm = fresh_database()
        url = await url_cm.__aenter__()
    storage = await open_storage(load_settings(database_url=url))
    try:
        await storage.accounts.add_device("watch-1", "p-1", "icu")
        await storage.accounts.add_device("watch-2", "p-2", "ward-b")
        yield storage
    finally:
        await storage.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


def us(t: float) -> int:
    return round(t * 1_000_000)


async def test_report_input(storage: Storage) -> None:
    """The window's alerts and the older ones still unanswered at its start, with their
    silence and escalation events counted; per patient, each hour with a reading once;
    a ward filter keeps the other ward's alerts and patients out."""
    readings = [
        # p-1: hour 0 (twice), hour 5, and one before the window and one at its end.
        ("watch-1", "p-1", "spo2", us(SINCE + 10), 97.0, us(SINCE), 1),
        ("watch-1", "p-1", "spo2", us(SINCE + 20), 97.0, us(SINCE), 1),
        ("watch-1", "p-1", "spo2", us(SINCE + 5 * HOUR_S + 1), 97.0, us(SINCE), 1),
        ("watch-1", "p-1", "spo2", us(SINCE - 1), 97.0, us(SINCE), 1),
        ("watch-1", "p-1", "spo2", us(UNTIL), 97.0, us(SINCE), 1),
        ("watch-2", "p-2", "heart_rate", us(SINCE + 23 * HOUR_S), 70.0, us(SINCE), 1),
    ]
    await storage.readings.commit(
        readings, [SeqAdvance("watch-1", 0, 1), SeqAdvance("watch-2", 0, 1)]
    )
    t = SINCE + 100
    p2: dict[str, Any] = {"patient_id": "p-2", "device_id": "watch-2", "ward": "ward-b"}
    await storage.alerts.append(
        [
            event("raised", alert_row(1, "active_unack", raised_at=t, updated_at=t)),
            event("silenced", alert_row(1, "active_unack", raised_at=t, updated_at=t + 1)),
            event("escalated", alert_row(1, "active_unack", raised_at=t, updated_at=t + 120)),
            event("escalated", alert_row(1, "active_unack", raised_at=t, updated_at=t + 240)),
            # Raised before the window, still active and unacknowledged in it.
            event("raised", alert_row(2, "active_unack", raised_at=SINCE - 50)),
            # Raised before the window and acknowledged before it: not the window's.
            event("raised", alert_row(3, "active_unack", raised_at=SINCE - 90)),
            event(
                "acked",
                alert_row(
                    3, "active_ack", raised_at=SINCE - 90, acked_at=SINCE - 60, acked_by="dr-lee"
                ),
            ),
            # Raised after the window.
            event("raised", alert_row(4, "active_unack", raised_at=UNTIL)),
            # Another ward's.
            event("raised", alert_row(5, "active_unack", raised_at=t, **p2)),
            event("silenced", alert_row(5, "active_unack", raised_at=t, **p2)),
        ]
    )

    everything = await storage.alerts.report_input(SINCE, UNTIL)
    assert [(a.id, a.silences, a.escalations) for a in everything.alerts] == [
        (1, 1, 2),
        (2, 0, 0),
        (5, 1, 0),
    ]
    assert everything.alerts[0].raised_at == t
    assert sorted(everything.monitored["p-1"]) == [0, 5]
    assert everything.monitored["p-2"] == [23]

    icu = await storage.alerts.report_input(SINCE, UNTIL, frozenset({"icu"}))
    assert [a.id for a in icu.alerts] == [1, 2]
    assert list(icu.monitored) == ["p-1"]

    nobody = await storage.alerts.report_input(SINCE, UNTIL, frozenset({"nowhere"}))
    assert (nobody.alerts, nobody.monitored) == ([], {})
