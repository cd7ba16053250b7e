"""`/readyz` under concurrency: many probes at once (a load balancer per replica, several
replicas) all find the database writable, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.http.keys import STORAGE
from gateway.settings import load_settings
from gateway.storage.schema import Probe, table_of
from tests.conftest import AiohttpClient, Gateway
from tests.support.postgres import fresh_database

# More than the engine's pool (5 + 10 overflow): probes also queue for a connection.
CONCURRENT = 40


async def _probe_all_at_once(gateway: Gateway) -> None:
    """CONCURRENT probes at once all answer 200, and the probe table holds one row."""
    responses = await asyncio.gather(*(gateway.client.get("/readyz") for _ in range(CONCURRENT)))
    answers = [(r.status, await r.json()) for r in responses]
    assert [a for a in answers if a[0] != 200] == []
    assert {a[1]["database"] for a in answers} == {"writable"}
    async with gateway.app[STORAGE].engine.connect() as conn:
        rows = await conn.scalar(select(func.count()).select_from(table_of(Probe)))
    assert rows == 1  # the probe rewrites one row, however many ran


async def test_concurrent_readiness_probes_all_answer_ready_on_sqlite(gateway: Gateway) -> None:
    """Forty `/readyz` at once on an SQLite gateway: every one answers 200 "writable"."""
    await _probe_all_at_once(gateway)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped after the gateway on it has closed."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def postgres_gateway(postgres_url: str, aiohttp_client: AiohttpClient) -> Gateway:
    """A gateway on the fresh PostgreSQL database (no accounts: readiness needs none)."""
    app = create_app(load_settings(database_url=postgres_url))
    return Gateway(app, await aiohttp_client(app), "", "")


async def test_concurrent_readiness_probes_all_answer_ready_on_postgres(
    postgres_gateway: Gateway,
) -> None:
    """Forty `/readyz` at once on a PostgreSQL gateway: every one answers 200 "writable"
    (the probe's write is one upsert, so overlapping probes cannot collide on its key)."""
    await _probe_all_at_once(postgres_gateway)
