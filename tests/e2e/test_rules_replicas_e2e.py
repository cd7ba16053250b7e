"""Two real `vitals serve` replicas on one PostgreSQL database: a rules reload on either
(`POST /v1/rules/reload`, SIGHUP) is in force on the other within 2 s, which alarms by
the new threshold and reports the new version for both replicas in `GET /v1/rules`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.client.process import ServerProcess, vitals_serve
from gateway.core.rules import parse_rules
from gateway.settings import shipped_config_dir
from tests.support.frames import batch, recent
from tests.support.postgres import fresh_database
from tests.support.processes import add_device, add_user, vitals

pytestmark = pytest.mark.e2e

SHIPPED = (shipped_config_dir() / "alert-rules.toml").read_text(encoding="utf-8")
# systolic_bp-low fires at once (for_s 0): `below = 91` raised to 101, then to 111.
RAISED = SHIPPED.replace("below = 91", "below = 101")
RAISED_MORE = SHIPPED.replace("below = 91", "below = 111")
SPREAD_S = 2.0


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@contextlib.contextmanager
def replica(database_url: str, tmp_path: Path, name: str) -> Iterator[ServerProcess]:
    """`vitals serve` as replica `name` with its own rules file (`<name>.toml`, the
    shipped rules) on `database_url`; stopped on exit."""
    rules = tmp_path / f"{name}.toml"
    rules.write_text(SHIPPED, encoding="utf-8")
    server = vitals_serve(
        "--database-url", database_url, "--rules", str(rules),
        log_dir=tmp_path / name, env={"VITALS_REPLICA_ID": name},
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def rules_of(http: aiohttp.ClientSession, server: ServerProcess, token: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{server.url}/v1/rules", headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def until_reported(
    http: aiohttp.ClientSession, server: ServerProcess, token: str, version: str
) -> tuple[float, Any]:
    """Seconds until `server` answers `version` for itself and both replicas, and that
    answer; fails after SPREAD_S."""
    start = time.monotonic()
    while True:
        body = await rules_of(http, server, token)
        reported = {r["replica_id"]: r["rules_version"] for r in body["replicas"]}
        if body["version"] == version and reported == {"a": version, "b": version}:
            return time.monotonic() - start, body
        if time.monotonic() - start > SPREAD_S:
            raise AssertionError(f"{server.url} still reports {body['version']}, {reported}")
        await asyncio.sleep(0.05)


async def test_a_reload_on_one_replica_is_in_force_on_the_other_within_two_seconds(
    database_url: str, tmp_path: Path
) -> None:
    """POST reload on A with A's file changed: B reports the new version (for A and B)
    within 2 s and raises systolic_bp-low on 95 mmHg, which only the new threshold
    alarms on; then SIGHUP on B with B's file changed reaches A the same way."""
    admin = json.loads(vitals(*add_user(database_url, "root", "admin")).stdout)["token"]
    device = json.loads(vitals(*add_device(database_url, "watch-1", "p-1", "icu")).stdout)
    with (
        replica(database_url, tmp_path, "a") as a,
        replica(database_url, tmp_path, "b") as b,
    ):
        async with aiohttp.ClientSession() as http:
            (tmp_path / "a.toml").write_text(RAISED, encoding="utf-8")
            raised = parse_rules(RAISED).version
            headers = {"Authorization": f"Bearer {admin}"}
            async with http.post(f"{a.url}/v1/rules/reload", headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["version"] == raised

            await until_reported(http, b, admin, raised)

            stream = {"Authorization": f"Bearer {device['token']}"}
            url = f"ws://127.0.0.1:{b.port}/v1/devices/stream"
            async with http.ws_connect(url, headers=stream) as ws:
                welcome = await ws.receive_json(timeout=5)
                seq = welcome["last_seq"] + 1
                await ws.send_json(batch(seq, recent(metric="systolic_bp", value=95)))
                assert await ws.receive_json(timeout=5) == {"type": "ack", "seq": seq}
            async with http.get(f"{b.url}/v1/alerts", headers=headers) as r:
                [alert] = (await r.json())["items"]
            assert (alert["rule"], alert["threshold"]) == ("systolic_bp-low", 101)

            (tmp_path / "b.toml").write_text(RAISED_MORE, encoding="utf-8")
            b.send_signal(signal.SIGHUP)
            await until_reported(http, a, admin, parse_rules(RAISED_MORE).version)
