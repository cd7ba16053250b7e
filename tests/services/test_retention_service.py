"""The retention service in a running gateway: started by `create_app`, it removes the
readings of expired days at start, and the REST API answers none of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.core.retention import day_of
from gateway.http.keys import METRICS, STORAGE
from gateway.settings import Settings
from gateway.storage.database import open_storage
from tests.conftest import Gateway
from tests.http.test_query_api import get, instants
from tests.storage.test_retention import TODAY, day_counts, day_rows


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"retention_days": 2}


@pytest.fixture
async def seeded(settings: Settings) -> None:
    """The gateway's database, before it starts, with 5 readings of patient p-1 on the
    day 10 days ago and 5 today."""
    storage = await open_storage(settings)
    try:
        await storage.readings.commit(day_rows(TODAY - 10, 5, ("p-1",)), [])
        await storage.readings.commit(day_rows(TODAY, 5, ("p-1",)), [])
    finally:
        await storage.close()


async def test_a_gateway_removes_expired_days_at_start(seeded: None, gateway: Gateway) -> None:
    """With retention_days 2, the old day's readings are gone soon after start (counted
    in vitals_readings_expired_total), today's stay, and the API shows today's only."""
    del seeded
    await gateway.add_device("watch-1", "p-1")
    engine = gateway.app[STORAGE].engine
    for _ in range(100):
        if TODAY - 10 not in await day_counts(engine):
            break
        await asyncio.sleep(0.05)
    assert await day_counts(engine) == {TODAY: 5}
    expired = gateway.app[METRICS].registry.get_sample_value("vitals_readings_expired_total")
    assert expired == 5
    page = await get(gateway, "/v1/readings", patient_id="p-1")
    assert [day_of(ts) for ts, _ in instants(page["items"])] == [TODAY] * 5
