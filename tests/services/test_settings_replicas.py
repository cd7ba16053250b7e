"""A patient's settings across replicas: two gateway apps on one PostgreSQL database; a
PUT on one is in force on the other (which evaluates the patient) within 2 s, woken by
the `vitals_settings` notification."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.http.keys import ACCOUNTS, ALERTS
from gateway.settings import load_settings
from gateway.storage.accounts import Role
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import open_dashboard, open_device, series
from tests.support.postgres import fresh_database

SPREAD_S = 2.0


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def test_settings_put_on_one_replica_are_in_force_on_the_other(
    database_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """systolic_bp-low raised to 101 for p-1 through replica A: replica B, where p-1's
    device streams, applies it within 2 s and raises on 95, which the ward's 91 does not."""
    gateways: list[Gateway] = []
    for replica_id in ("a", "b"):
        settings = load_settings(
            database_url=database_url, replica_id=replica_id, commit_delay_ms=1.0
        )
        app = create_app(settings)
        client = await aiohttp_client(app)
        if not gateways:
            admin = await app[ACCOUNTS].add_user("root", Role.ADMIN)
            clinician = await app[ACCOUNTS].add_user("dr-lee", Role.CLINICIAN, wards=["icu"])
        gateways.append(Gateway(app, client, admin, clinician))
    a, b = gateways
    token = await b.add_device("dev-1", "p-1")
    body = {"overrides": {"systolic_bp-low": {"below": 101, "reason": "post-op"}}}
    async with open_dashboard(b) as dash, open_device(b, token) as device:
        await dash.subscribe()
        await device.send(series("systolic_bp", [120]))  # p-1 is B's from now on
        async with a.client.put(
            "/v1/patients/p-1/settings", json=body, headers=a.auth(a.clinician_token)
        ) as r:
            assert r.status == 200, await r.text()
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (
            b.app[ALERTS].rules_of("p-1").by_name["systolic_bp-low"]
            == b.app[ALERTS].rules.by_name["systolic_bp-low"]
        ):
            assert loop.time() - start < SPREAD_S, "not in force on B within 2 s"
            await asyncio.sleep(0.02)
        await device.send(series("systolic_bp", [95], start=1))
        alert = (await dash.alert()).alert
    assert (alert["rule"], alert["patient_id"], alert["threshold"]) == (
        "systolic_bp-low",
        "p-1",
        101.0,
    )
