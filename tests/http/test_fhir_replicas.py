"""Bulk Data exports behind replicas: two gateway apps on one PostgreSQL database; an
export kicked off on one is polled, downloaded and cancelled on the other, since the
job is a row of the shared database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from gateway.app import create_app
from gateway.http.keys import ACCOUNTS
from gateway.settings import load_settings
from gateway.storage.accounts import Role
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import TIMEOUT_S, open_device, series
from tests.support.postgres import fresh_database


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def start(database_url: str, replica_id: str, aiohttp_client: AiohttpClient) -> Gateway:
    settings = load_settings(database_url=database_url, replica_id=replica_id, commit_delay_ms=1.0)
    app = create_app(settings)
    return Gateway(app, await aiohttp_client(app), "", "")


async def test_export_started_on_one_replica_is_served_by_the_other(
    database_url: str, aiohttp_client: AiohttpClient
) -> None:
    """Kick-off on A; B answers the status with the manifest and streams the file (the
    readings stored through A, as valid NDJSON lines); a DELETE on B ends it for A."""
    a = await start(database_url, "replica-a", aiohttp_client)
    b = await start(database_url, "replica-b", aiohttp_client)
    token = await a.app[ACCOUNTS].add_user("root", Role.ADMIN)
    device = await a.add_device("watch-1", "p-1")
    async with open_device(a, device) as stream:
        await stream.send(series("heart_rate", [70.0, 71.0, 72.0]))
    auth = {"Authorization": f"Bearer {token}"}
    async with a.client.get(
        "/v1/fhir/Patient/$export?_type=Observation",
        headers={**auth, "Prefer": "respond-async"},
    ) as resp:
        assert resp.status == 202
        status_path = "/v1/fhir/_export/" + resp.headers["Content-Location"].rsplit("/", 1)[1]
    manifest = None
    for _ in range(int(TIMEOUT_S / 0.05)):
        async with b.client.get(status_path, headers=auth) as resp:
            if resp.status == 200:
                manifest = await resp.json()
                break
            assert resp.status == 202
        await asyncio.sleep(0.05)
    assert manifest is not None
    (item,) = manifest["output"]
    assert item["readings"] == 3
    async with b.client.get(f"{status_path}/0.ndjson", headers=auth) as resp:
        assert resp.status == 200
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [o["valueQuantity"]["value"] for o in lines] == [70.0, 71.0, 72.0]
    async with b.client.delete(status_path, headers=auth) as resp:
        assert resp.status == 202
    async with a.client.get(status_path, headers=auth) as resp:
        assert resp.status == 404
