"""One set of rules across replicas: two gateway apps on one PostgreSQL database (each
with its own rules file and replica id) follow whichever reloaded or started last,
within 2 s; a bad file changes nothing anywhere; stored rules a replica cannot parse
leave it on its own; `GET /v1/rules` reports every live replica's version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway.app import create_app
from gateway.core.rules import parse_rules
from gateway.http.keys import ACCOUNTS, ALERTS, RULES, STORAGE
from gateway.settings import Settings, load_settings, shipped_config_dir
from gateway.storage.accounts import Role
from gateway.storage.rules_store import RulesStore
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import open_dashboard, open_device, series
from tests.support.postgres import fresh_database

SHIPPED = (shipped_config_dir() / "alert-rules.toml").read_text(encoding="utf-8")
# systolic_bp-low fires at once: from `below = 91` to `below = 101`.
RAISED = SHIPPED.replace("below = 91", "below = 101")
SPREAD_S = 2.0


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@dataclass
class Replicas:
    """Starts gateway apps on one database, each with its own rules file."""

    database_url: str
    tmp_path: Path
    aiohttp_client: AiohttpClient
    admin_token: str = ""
    clinician_token: str = ""

    def settings(self, replica_id: str) -> Settings:
        return load_settings(
            database_url=self.database_url,
            replica_id=replica_id,
            rules_file=str(self.tmp_path / f"{replica_id}.toml"),
            commit_delay_ms=1.0,
        )

    def write_rules(self, replica_id: str, rules: str | bytes) -> None:
        path = self.tmp_path / f"{replica_id}.toml"
        if isinstance(rules, bytes):
            path.write_bytes(rules)
        else:
            path.write_text(rules, encoding="utf-8")

    async def start(self, replica_id: str, rules: str = SHIPPED) -> Gateway:
        self.write_rules(replica_id, rules)
        app = create_app(self.settings(replica_id))
        client = await self.aiohttp_client(app)
        if not self.admin_token:
            self.admin_token = await app[ACCOUNTS].add_user("root", Role.ADMIN)
            self.clinician_token = await app[ACCOUNTS].add_user(
                "dr-lee", Role.CLINICIAN, wards=["icu"]
            )
        return Gateway(app, client, self.admin_token, self.clinician_token)


@pytest.fixture
def replicas(database_url: str, tmp_path: Path, aiohttp_client: AiohttpClient) -> Replicas:
    return Replicas(database_url, tmp_path, aiohttp_client)


async def get_rules(gateway: Gateway) -> dict[str, Any]:
    async with gateway.client.get("/v1/rules", headers=gateway.auth(gateway.admin_token)) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def reload(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    async with gateway.client.post(
        "/v1/rules/reload", headers=gateway.auth(gateway.admin_token)
    ) as r:
        body: dict[str, Any] = await r.json()
        return r.status, body


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until `check()` holds; fails after `seconds`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def test_a_reload_on_one_replica_reaches_the_other_within_two_seconds(
    replicas: Replicas,
) -> None:
    """A's changed file, reloaded on A, is in force on B within 2 s (same version, the
    new threshold), and B raises on a reading that only the new threshold alarms on."""
    a = await replicas.start("a")
    b = await replicas.start("b")
    new_version = parse_rules(RAISED).version
    replicas.write_rules("a", RAISED)

    status, body = await reload(a)

    rules = len(parse_rules(RAISED))  # every rule of the shipped file, NEWS2 ones too
    assert (status, body) == (200, {"status": "reloaded", "rules": rules, "version": new_version})
    assert a.app[ALERTS].rules.version == new_version  # in force before the answer

    async def b_follows() -> bool:
        return bool((await get_rules(b))["version"] == new_version)

    await within(SPREAD_S, b_follows)
    [rule] = [r for r in (await get_rules(b))["rules"] if r["name"] == "systolic_bp-low"]
    assert rule["threshold"] == 101
    token = await b.add_device("dev-1", "p-1")
    async with open_dashboard(b) as dash, open_device(b, token) as device:
        await dash.subscribe()
        await device.send(series("systolic_bp", [95]))
        alert = (await dash.alert()).alert
    assert (alert["rule"], alert["threshold"]) == ("systolic_bp-low", 101)


async def test_a_bad_file_changes_nothing_anywhere(replicas: Replicas) -> None:
    """A broken file reloaded on A answers 422 as before; the stored rules and both
    replicas' versions stay what they were."""
    a = await replicas.start("a")
    b = await replicas.start("b")
    before = parse_rules(SHIPPED).version
    replicas.write_rules("a", RAISED.replace("below = 101", 'below = "101"'))

    status, body = await reload(a)

    assert status == 422, body
    assert body["in_force"] == "previous rules"
    await asyncio.sleep(0.3)  # a wrongly sent wake-up would have arrived by now
    stored = await RulesStore(a.app[STORAGE].engine).current()
    assert stored is not None
    assert stored.version == before
    assert (await get_rules(a))["version"] == (await get_rules(b))["version"] == before


async def test_the_last_replica_to_start_sets_the_rules_for_all(replicas: Replicas) -> None:
    """B starting with another file than A's puts B's rules in force on A too."""
    a = await replicas.start("a", SHIPPED)
    await replicas.start("b", RAISED)

    async def a_follows() -> bool:
        return a.app[ALERTS].rules.version == parse_rules(RAISED).version

    await within(SPREAD_S, a_follows)


async def test_a_missed_wake_up_is_caught_up_by_reading_the_row(replicas: Replicas) -> None:
    """Rules stored with no notification (one lost while listening was down) are put in
    force by the next follow (the safety-net poll, or a reconnect), and the replica's row
    then records their version."""
    a = await replicas.start("a")
    version = parse_rules(RAISED).version
    async with a.app[STORAGE].engine.begin() as conn:
        await conn.execute(
            text("UPDATE rules SET text = :text, version = :version, set_by = 'elsewhere'"),
            {"text": RAISED, "version": version},
        )
    await asyncio.sleep(0.3)
    assert a.app[ALERTS].rules.version != version  # nothing woke it

    assert await a.app[RULES].follow() == version

    assert a.app[ALERTS].rules.version == version
    [me] = (await get_rules(a))["replicas"]
    assert (me["replica_id"], me["rules_version"]) == ("a", version)
    async with a.app[STORAGE].engine.connect() as conn:
        recorded = await conn.scalar(text("SELECT rules_version FROM replicas"))
    assert recorded == version


async def test_stored_rules_this_replica_cannot_parse_leave_it_on_its_own(
    replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored text this replica refuses (a newer gateway's rule kind) is logged once and
    not applied: it keeps its rules and reports their version."""
    a = await replicas.start("a")
    mine = a.app[ALERTS].rules.version
    async with a.app[STORAGE].engine.begin() as conn:
        await conn.execute(
            text("UPDATE rules SET text = :text, version = 'fromthefutur'"),
            {"text": SHIPPED + '\n[[rule]]\nname = "x"\nmetric = "spo2"\nrising = 3\n'},
        )

    assert await a.app[RULES].follow() == mine
    assert await a.app[RULES].follow() == mine

    refused = [r for r in caplog.records if "cannot apply the cluster's rules" in r.message]
    assert len(refused) == 1
    assert "fromthefutur" in refused[0].message
    assert (await get_rules(a))["version"] == mine


async def test_rules_list_every_live_replica_and_its_version(replicas: Replicas) -> None:
    """`GET /v1/rules` on B lists A and B (each replica heartbeats its own row) with
    their versions, all equal after a reload."""
    a = await replicas.start("a")
    assert [r["replica_id"] for r in (await get_rules(a))["replicas"]] == ["a"]
    b = await replicas.start("b")
    replicas.write_rules("b", RAISED)
    status, _ = await reload(b)
    assert status == 200
    version = parse_rules(RAISED).version

    async def all_report_it() -> bool:
        listed = (await get_rules(b))["replicas"]
        return [(r["replica_id"], r["rules_version"]) for r in listed] == [
            ("a", version),
            ("b", version),
        ]

    await within(SPREAD_S, all_report_it)
    body = await get_rules(b)
    assert body["version"] == version
    assert all(0 <= r["heartbeat_age_s"] < 10 for r in body["replicas"])
