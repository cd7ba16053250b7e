"""The event feed and the vitals relay on PostgreSQL: every alert event reaches a
dashboard in id order whichever replica stored it, after a gap, a missed notification
or a lost listener; vitals from a device on one replica reach dashboards on another.

"Another replica" here is a second engine writing the events table as the gateway's
writer does (`EngineEventsWriter`, the counters row, `pg_notify` in the transaction):
until event ids come from the counters row, two real gateways would collide on ids.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiohttp import ClientSession, WSMsgType
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.app import create_app
from gateway.client.process import ServerProcess, vitals_serve
from gateway.core.alert_engine import Alert
from gateway.core.rules import Priority
from gateway.http.keys import ACCOUNTS, FEED, HUB
from gateway.services import feed as feed_module
from gateway.settings import load_settings
from gateway.storage.accounts import Role
from gateway.storage.events import RecordedEvent, event_row, stored_row
from gateway.storage.notify import CHANNEL_EVENTS, LISTENER_NAME, asyncpg_dsn, notify_sql
from gateway.storage.schema import AlertEventRow, AlertRow, table_of
from schemas.codes import AlertStatus
from schemas.dashboard import AlertEvent, AlertOut
from tests.conftest import AiohttpClient, Gateway
from tests.support.alert_helpers import Dashboard, open_dashboard
from tests.support.frames import batch_text, reading, rfc3339
from tests.support.postgres import fresh_database
from tests.support.processes import add_device, add_user, vitals

# The safety net runs every second: a missed notification is caught up within this.
CATCH_UP_WITHIN_S = 2.5


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped after everything on it has closed."""
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def pg_gateway(postgres_url: str, aiohttp_client: AiohttpClient) -> Gateway:
    """A real gateway on the fresh PostgreSQL database, with the usual two users."""
    app = create_app(
        load_settings(database_url=postgres_url, commit_delay_ms=1.0, revocation_check_s=0.5)
    )
    client = await aiohttp_client(app)
    admin = await app[ACCOUNTS].add_user("root", Role.ADMIN)
    clinician = await app[ACCOUNTS].add_user("dr-lee", Role.CLINICIAN, wards=["icu"])
    return Gateway(app, client, admin, clinician)


@pytest.fixture
async def other_replica(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the same database: what another replica writes through."""
    engine = create_async_engine(postgres_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def recorded(event_id: int, ward: str = "icu") -> RecordedEvent:
    """A raise of a fresh alert as the alert service records it: the stored row and the
    `AlertEvent` built from it (alert id 1000 + event id)."""
    now = time.time()
    alert = Alert(
        id=1000 + event_id,
        rule="spo2-low",
        metric="spo2",
        priority=Priority.HIGH,
        status=AlertStatus.ACTIVE_UNACK,
        patient_id=f"p-{event_id}",
        device_id=f"watch-{event_id}",
        threshold=92.0,
        direction="below",
        first_value=88.0,
        last_value=88.0,
        worst_value=88.0,
        raised_at=now,
        updated_at=now,
        cleared_at=None,
        acked_at=None,
        acked_by=None,
    )
    row = stored_row(alert, ward=ward, last_event_id=event_id)
    payload = AlertEvent(event_id=event_id, alert=AlertOut.model_validate(row)).model_dump_json()
    return RecordedEvent(event_id, "raised", True, row, payload)


async def commit_events(
    engine: AsyncEngine, events: list[RecordedEvent], *, notify: bool = True
) -> None:
    """Store `events` in one transaction as a replica's writer does: alert and event
    rows, the counters row moved on, and (unless told not to) the NOTIFY of its newest.
    The ids are the test's (to make gaps), not drawn from the counter."""
    newest = events[-1].event_id
    async with engine.begin() as conn:
        await conn.execute(insert(table_of(AlertRow)), [e.row for e in events])
        await conn.execute(insert(table_of(AlertEventRow)), [event_row(e) for e in events])
        await conn.execute(
            text("UPDATE counters SET value = GREATEST(value, :n) WHERE name = 'event_id'"),
            {"n": newest},
        )
        if notify:
            await conn.execute(notify_sql, {"channel": CHANNEL_EVENTS, "payload": str(newest)})


async def subscribed(gateway: Gateway, dashboard: Dashboard) -> None:
    sub = await dashboard.subscribe(0)
    assert sub.replayed == []
    assert sub.last_event_id == gateway.app[HUB].last_event_id


async def test_another_replicas_events_reach_a_dashboard_in_order(
    pg_gateway: Gateway, other_replica: AsyncEngine
) -> None:
    """Events committed by another replica, with their NOTIFY, reach a dashboard here in
    id order, each exactly as stored; one at a time they arrive within ~100 ms (p99)."""
    async with open_dashboard(pg_gateway) as dashboard:
        await subscribed(pg_gateway, dashboard)
        first = [recorded(i) for i in (1, 2, 3)]
        await commit_events(other_replica, first)
        await commit_events(other_replica, [recorded(4), recorded(5)])
        got = await dashboard.alerts(5)
        assert [m.event_id for m in got] == [1, 2, 3, 4, 5]
        assert [m.text for m in got[:3]] == [e.payload for e in first]

        latencies = []
        for event_id in range(6, 56):
            started = time.monotonic()
            await commit_events(other_replica, [recorded(event_id)])
            msg = await dashboard.alert()
            assert msg.event_id == event_id
            latencies.append(msg.received - started)
        await dashboard.assert_silent(1.2)  # no duplicate, even after the safety net ran
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"cross-replica alert: p50 {statistics.median(latencies) * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms")  # fmt: skip
    assert p99 < 0.1
    assert pg_gateway.app[HUB].last_event_id == 55


async def test_local_events_ahead_of_a_gap_wait_for_it(
    pg_gateway: Gateway, other_replica: AsyncEngine
) -> None:
    """This replica's events 2 and 3, committed while another's event 1 is not yet
    visible, are held; once 1 is in the table, 1, 2, 3 go out in order, once each."""
    gateway = pg_gateway
    async with open_dashboard(gateway) as dashboard:
        await subscribed(gateway, dashboard)
        local = [recorded(2), recorded(3)]
        await commit_events(other_replica, local, notify=False)  # "our" commit
        gateway.app[FEED].publish_committed([(e.event_id, "icu", e.payload) for e in local])
        await dashboard.assert_silent(0.5)
        assert gateway.app[HUB].last_event_id == 0

        await commit_events(other_replica, [recorded(1)])
        got = await dashboard.alerts(3)
        assert [m.event_id for m in got] == [1, 2, 3]
        assert [m.text for m in got[1:]] == [e.payload for e in local]
        # Handed over again (or notified again): nothing goes out twice.
        gateway.app[FEED].publish_committed([(e.event_id, "icu", e.payload) for e in local])
        await dashboard.assert_silent(1.2)
    assert gateway.app[HUB].last_event_id == 3


async def test_a_missed_notification_is_caught_up_by_the_safety_net(
    pg_gateway: Gateway, other_replica: AsyncEngine
) -> None:
    """Events committed with no NOTIFY at all still reach the dashboard, within the
    safety net's period, in order."""
    async with open_dashboard(pg_gateway) as dashboard:
        await subscribed(pg_gateway, dashboard)
        started = time.monotonic()
        await commit_events(other_replica, [recorded(1), recorded(2)], notify=False)
        got = await dashboard.alerts(2, within=CATCH_UP_WITHIN_S)
        assert [m.event_id for m in got] == [1, 2]
        assert got[-1].received - started < CATCH_UP_WITHIN_S


@pytest.fixture
def long_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """The feed's timer runs only every minute: what arrives sooner was woken otherwise."""
    monkeypatch.setattr(feed_module, "SAFETY_NET_S", 60.0)


@pytest.mark.usefixtures("long_safety_net")
async def test_the_listener_reconnects_and_catches_up(
    pg_gateway: Gateway, other_replica: AsyncEngine, postgres_url: str
) -> None:
    """With its LISTEN connection cut off, and refused again while another replica
    commits (so that NOTIFY is lost), the gateway reconnects once it may and reads
    what it missed at once, not at its (here one-minute) timer; NOTIFY works again."""
    database = postgres_url.rsplit("/", 1)[1]
    async with open_dashboard(pg_gateway) as dashboard:
        await subscribed(pg_gateway, dashboard)
        await commit_events(other_replica, [recorded(1)])
        assert (await dashboard.alert()).event_id == 1

        # On the server's own database (one cannot shut the door it stands in); the
        # other replica's pooled connection was opened before the door shuts.
        admin = await asyncpg.connect(asyncpg_dsn(f"{postgres_url.rsplit('/', 1)[0]}/postgres"))
        try:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            cut = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = $2",
                database,
                LISTENER_NAME,
            )
            assert cut == 1
            await commit_events(other_replica, [recorded(2), recorded(3)])  # nobody hears it
            await dashboard.assert_silent(1.0)
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await admin.close()
        got = await dashboard.alerts(2, within=CATCH_UP_WITHIN_S + 2)
        assert [m.event_id for m in got] == [2, 3]

        started = time.monotonic()
        await commit_events(other_replica, [recorded(4)])
        msg = await dashboard.alert()
        assert msg.event_id == 4
        assert msg.received - started < 1.0


# --- two real gateway processes ------------------------------------------------------

VITALS_RUN_S = 4.5


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two `vitals serve` on the one fresh database, distinct ports, A migrated first."""
    a = vitals_serve("--database-url", postgres_url, log_dir=tmp_path / "a")
    b = vitals_serve("--database-url", postgres_url, log_dir=tmp_path / "b")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for server in (a, b):
            server.stop()


@pytest.mark.e2e
async def test_vitals_from_a_device_on_one_replica_reach_dashboards_on_both(
    replicas: tuple[ServerProcess, ServerProcess], postgres_url: str
) -> None:
    """A device streams to replica A; dashboards on A and on B each get its patient's
    vitals within 1 s of the first reading, and at most once a second (B does not get
    them twice, A does not get its own back)."""
    a, b = replicas
    clinician = json.loads(
        (
            await asyncio.to_thread(vitals, *add_user(postgres_url, "dr-lee", "clinician", ["icu"]))
        ).stdout
    )["token"]
    device = json.loads(
        (await asyncio.to_thread(vitals, *add_device(postgres_url, "watch-1", "p-1", "icu"))).stdout
    )["token"]
    received: dict[str, list[float]] = {"a": [], "b": []}

    async with ClientSession() as http:

        async def watch(name: str, server: ServerProcess, ready: asyncio.Event) -> None:
            async with http.ws_connect(
                f"ws://127.0.0.1:{server.port}/v1/dashboard/stream",
                headers={"Authorization": f"Bearer {clinician}"},
            ) as ws:
                await ws.send_json({"type": "subscribe", "since_event_id": 0, "vitals": True})
                assert (await ws.receive_json(timeout=5))["type"] == "subscribed"
                ready.set()
                while True:
                    msg = await ws.receive()
                    if msg.type is not WSMsgType.TEXT:
                        return
                    data = json.loads(msg.data)
                    if data["type"] == "vitals":
                        assert data["patient_id"] == "p-1"
                        received[name].append(time.monotonic())

        ready = {name: asyncio.Event() for name in received}
        watchers = [
            asyncio.create_task(watch(name, server, ready[name]))
            for name, server in zip(received, (a, b), strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready.values())), 5)
        async with http.ws_connect(
            f"ws://127.0.0.1:{a.port}/v1/devices/stream",
            headers={"Authorization": f"Bearer {device}"},
        ) as ws:
            seq = int((await ws.receive_json(timeout=5))["last_seq"])
            started = time.monotonic()
            while time.monotonic() - started < VITALS_RUN_S:
                seq += 1
                now = rfc3339(datetime.now(UTC))
                await ws.send_str(batch_text(seq, [reading("heart_rate", 72, now)]))
                assert (await ws.receive_json(timeout=5)) == {"type": "ack", "seq": seq}
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.2)  # the last flush
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    for name, times in received.items():
        assert times, f"no vitals on replica {name}"
        assert times[0] - started <= 1.1, (name, times[0] - started)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        # Once a second: the sender's timer, give or take the notification's jitter.
        assert min(gaps, default=1.0) > 0.8, (name, gaps)
        assert len(times) <= VITALS_RUN_S + 2, (name, len(times))
