"""Replicas of `vitals serve` on one PostgreSQL database behind HAProxy, as real
processes (`gateway.client.cluster`): they start together on an empty database, carry
simulator devices through HAProxy without losing or doubling an acked batch (also
through a rolling restart), see the client's address rather than HAProxy's, and
`vitals cluster` starts and stops cleanly.

Each test has a database of its own (`fresh_database`). Without HAProxy or a
PostgreSQL server they skip, saying which; under `CI=true` they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType

from gateway.client.cluster import HAPROXY, Cluster, haproxy_config_path, render_haproxy_config
from schemas.codes import CloseCode
from tests.support.cluster import (
    CLIENT_ADDRESS,
    REPLICA_ENV,
    Dashboard,
    acked_batches,
    assert_every_acked_batch_stored,
    require_haproxy,
    simulate,
    stored_batches,
    until_acked,
    user,
)
from tests.support.frames import batch_text, reading, recent
from tests.support.postgres import fresh_database
from tests.support.processes import VITALS, add_device, free_port, vitals

pytestmark = pytest.mark.e2e


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (skips or fails as `fresh_database` says)."""
    require_haproxy()
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two replicas on the fresh database behind HAProxy, not started yet; stopped after."""
    c = Cluster(database_url, tmp_path / "cluster", env=REPLICA_ENV)
    try:
        yield c
    finally:
        await asyncio.to_thread(c.stop)


async def test_two_replicas_starting_together_on_an_empty_database_both_come_up(
    cluster: Cluster, database_url: str
) -> None:
    """Two replicas started at the same moment on an empty database both migrate (or
    wait for the other's migration), become ready behind HAProxy, and leave the schema
    at the head."""
    await asyncio.to_thread(cluster.start)
    async with aiohttp.ClientSession() as http:
        for replica in cluster.replicas:
            async with http.get(f"{replica.url}/readyz") as r:
                assert r.status == 200, await r.text()
    current = await asyncio.to_thread(vitals, "db", "current", "--database-url", database_url)
    assert current.stdout.strip().endswith("(head)"), current.stdout


async def test_devices_through_haproxy_are_stored_once_and_replicas_see_the_client(
    cluster: Cluster, database_url: str, tmp_path: Path
) -> None:
    """Simulator devices streaming through HAProxy: every acked (device, seq) is stored
    exactly once; each replica's /metrics names itself in vitals_build_info; a request
    through HAProxy is logged and audited with the client's address, not HAProxy's."""
    await asyncio.to_thread(cluster.start)
    admin = user(database_url, "root", "admin")
    acked_log = tmp_path / "acked.jsonl"
    sim = await simulate(
        cluster.url, admin, acked_log, tmp_path / "simulate.log", devices=8, duration=4
    )
    async with asyncio.timeout(30):
        assert await sim.wait() == 0, (tmp_path / "simulate.log").read_text()
    assert_every_acked_batch_stored(
        acked_batches(acked_log), await stored_batches(database_url), exactly_once=True
    )

    async with aiohttp.ClientSession() as http:
        for i, replica in enumerate(cluster.replicas):
            async with http.get(f"{replica.url}/metrics") as r:
                metrics = await r.text()
            info = re.search(r"^vitals_build_info\{([^}]*)\}", metrics, re.MULTILINE)
            assert info is not None, metrics
            assert f'replica="replica-{i + 1}"' in info.group(1)

    headers = {"Authorization": f"Bearer {admin}"}
    connector = aiohttp.TCPConnector(local_addr=(CLIENT_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        device = {"id": "probe-001", "patient_id": "p-900", "ward": "icu"}
        async with http.post(f"{cluster.url}/v1/devices", json=device) as r:
            assert r.status == 201, await r.text()
        async with http.get(f"{cluster.url}/v1/audit") as r:
            audit = (await r.json())["items"]
    added = [e for e in audit if e["action"] == "device.add" and e["target"] == "probe-001"]
    assert [e["address"] for e in added] == [CLIENT_ADDRESS], audit
    access = "".join(replica.log_text() for replica in cluster.replicas)
    assert re.search(rf"POST /v1/devices 201 .* {re.escape(CLIENT_ADDRESS)}$", access, re.M)


async def test_rolling_restart_loses_no_acked_batch_and_dashboards_resume(
    cluster: Cluster, database_url: str, tmp_path: Path
) -> None:
    """SIGTERM and restart each replica in turn while devices stream and two dashboards
    watch through HAProxy: every batch a device saw acked is in the database, the
    devices stream on, and every dashboard subscribed again after its replica went."""
    devices = 6
    await asyncio.to_thread(cluster.start)
    admin = user(database_url, "root", "admin")
    clinician = user(database_url, "dr-lee", "clinician")
    acked_log = tmp_path / "acked.jsonl"
    sim_log = tmp_path / "simulate.log"
    dashboards = [Dashboard(f"{cluster.url}/v1/dashboard/stream", clinician) for _ in range(2)]
    async with aiohttp.ClientSession() as http:
        watching = [asyncio.create_task(d.run(http)) for d in dashboards]
        sim = await simulate(cluster.url, admin, acked_log, sim_log, devices=devices, duration=0)
        try:
            await until_acked(acked_log, devices, Counter(), 3)
            assert all(d.subscriptions == 1 for d in dashboards), dashboards
            for i in range(len(cluster.replicas)):
                await asyncio.to_thread(cluster.restart, i)
                before = Counter(a.device_id for a in acked_batches(acked_log))
                await until_acked(acked_log, devices, before, 3)
            sim.send_signal(signal.SIGTERM)  # then it waits up to --drain s for acks
            async with asyncio.timeout(20):
                assert await sim.wait() == 128 + signal.SIGTERM, sim_log.read_text()
        finally:
            for task in watching:
                task.cancel()
            await asyncio.gather(*watching, return_exceptions=True)
            if sim.returncode is None:
                sim.kill()
                await sim.wait()
    # Exactly once, though a batch may be resent to B while A still commits it: the
    # guarded seq advance stores it once.
    assert_every_acked_batch_stored(
        acked_batches(acked_log), await stored_batches(database_url), exactly_once=True
    )
    assert all(d.subscriptions >= 2 for d in dashboards), dashboards
    # Each device was on a replica that went away at least once. The count is the
    # summary's, the last line that has one (progress lines every 5 s count so far).
    reconnects = re.findall(r"reconnects (\d+)", sim_log.read_text())
    assert reconnects, sim_log.read_text()
    assert int(reconnects[-1]) >= devices, sim_log.read_text()


async def test_vitals_cluster_starts_prints_the_banner_and_stops_cleanly(
    database_url: str, tmp_path: Path
) -> None:
    """`vitals cluster --duration 5` on a database of its own: HAProxy and two replicas
    come up, the demo banner is printed, the simulator runs, and everything stops
    (each replica's graceful shutdown, HAProxy gone) with exit status 0."""
    port = free_port()
    run_dir = tmp_path / "cluster"
    proc = await asyncio.create_subprocess_exec(
        *VITALS,
        *("cluster", "--duration", "5", "--devices", "2", "--port", str(port)),
        *("--database-url", database_url, "--run-dir", str(run_dir)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stdout + stderr
    assert stdout.count(f"vitals-gateway cluster: http://127.0.0.1:{port}") == 2, stdout
    assert "clinician token (demo-nurse, ward icu): " in stdout
    assert f"--config {tmp_path / 'cluster.toml'}" in stdout
    for name in ("replica-1", "replica-2"):
        assert "INFO gateway: stopped" in (run_dir / f"{name}.log").read_text()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)  # HAProxy is gone


def test_the_shipped_haproxy_config_renders_for_any_number_of_replicas(tmp_path: Path) -> None:
    """deploy/haproxy.cfg written for three replicas has three servers in each backend,
    the second tracking the first's checks, and HAProxy accepts it."""
    require_haproxy()
    rendered = render_haproxy_config(haproxy_config_path().read_text(), 3)
    servers = re.findall(r"^\s*server (replica\d) \"\$\{LB_REPLICA\d\}\" (.*)$", rendered, re.M)
    assert servers == [
        *((f"replica{n}", "check") for n in (1, 2, 3)),
        *((f"replica{n}", f"track devices/replica{n}") for n in (1, 2, 3)),
    ]
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered)
    ports = {f"LB_REPLICA{n}": f"127.0.0.1:{free_port()}" for n in (1, 2, 3)}
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)],
        env={**os.environ, **ports},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_a_device_connected_through_two_replicas_keeps_only_its_newer_stream(
    cluster: Cluster, database_url: str
) -> None:
    """A device's stream on replica 1, then a second stream of it on replica 2 (each
    straight to its replica, as two HAProxy routes would): the older stream is closed
    4001 within 2 s, a batch it still sends is not stored, and every seq either stream
    saw acked is stored exactly once."""
    await asyncio.to_thread(cluster.start)
    out = await asyncio.to_thread(vitals, *add_device(database_url, "watch-900", "p-900", "icu"))
    headers = {"Authorization": f"Bearer {json.loads(out.stdout)['token']}"}
    first, second = (f"{r.url}/v1/devices/stream" for r in cluster.replicas)
    acked: list[int] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(first, headers=headers) as old:
        assert (await old.receive_json())["last_seq"] == 0
        for seq in (1, 2, 3):
            await old.send_str(batch_text(seq, recent(5)))
            assert (await old.receive_json())["seq"] == seq
            acked.append(seq)
        async with http.ws_connect(second, headers=headers) as new:
            opened = time.monotonic()
            welcome = await new.receive_json()
            assert welcome["last_seq"] == 3
            async with asyncio.timeout(2.0):
                closing = await old.receive()
            assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
            assert closing.data == CloseCode.REPLACED, closing
            assert time.monotonic() - opened < 2.0
            with contextlib.suppress(ConnectionError, RuntimeError):
                await old.send_str(batch_text(4, recent(5)))  # a fenced stream's batch
            for seq in (4, 5):
                await new.send_str(batch_text(seq, recent(5)))
                assert (await new.receive_json())["seq"] == seq
                acked.append(seq)
    stored = await stored_batches(database_url)
    assert {seq: n for (d, seq), n in stored.items() if d == "watch-900"} == {
        seq: 5 for seq in acked
    }


async def test_an_alert_is_silenced_and_acknowledged_on_a_replica_that_does_not_evaluate_it(
    cluster: Cluster, database_url: str
) -> None:
    """A device on replica 1 raises an alert; a clinician silences, then acknowledges
    it through replica 2, which hands each to replica 1 (the patient's owner): the
    answers are the silenced and the acknowledged events, the stored alert says who,
    and a second acknowledgement through replica 2 is a conflict."""
    await asyncio.to_thread(cluster.start)
    out = await asyncio.to_thread(vitals, *add_device(database_url, "watch-901", "p-901", "icu"))
    device = {"Authorization": f"Bearer {json.loads(out.stdout)['token']}"}
    clinician = {"Authorization": f"Bearer {user(database_url, 'dr-lee', 'clinician')}"}
    owner, other = cluster.replicas
    stream = f"{owner.url}/v1/devices/stream"
    async with aiohttp.ClientSession() as http, http.ws_connect(stream, headers=device) as ws:
        await ws.receive_json()
        # SpO2 80 % for 15 s of reading time: past the shipped rule's for_s of 10 s.
        start = datetime.now(UTC) - timedelta(seconds=16)
        low = [reading("spo2", 80, start + timedelta(seconds=i)) for i in range(16)]
        await ws.send_str(batch_text(1, low))
        assert (await ws.receive_json())["seq"] == 1
        alert_id = None
        for _ in range(50):
            async with http.get(f"{other.url}/v1/alerts", headers=clinician) as r:
                items = (await r.json())["items"]
            if items:
                alert_id = items[0]["id"]
                break
            await asyncio.sleep(0.1)
        assert alert_id is not None, "the alert never reached the other replica"
        silence = f"{other.url}/v1/alerts/{alert_id}/silence"
        async with http.post(silence, json={"seconds": 60}, headers=clinician) as r:
            assert r.status == 200, await r.text()
            event = await r.json()
        assert event["alert"]["silenced_by"] == "dr-lee", event
        async with http.post(f"{other.url}/v1/alerts/{alert_id}/ack", headers=clinician) as r:
            assert r.status == 200, await r.text()
            event = await r.json()
        assert event["alert"]["acked_by"] == "dr-lee", event
        async with http.post(f"{other.url}/v1/alerts/{alert_id}/ack", headers=clinician) as r:
            assert r.status == 409, await r.text()


async def test_a_patients_second_device_on_another_replica_still_raises_its_alarms(
    cluster: Cluster, database_url: str
) -> None:
    """A patient wears two devices that land on two replicas: the replica that does not
    evaluate the patient relays what it stores to the one that does, so a desaturation
    seen only by the first device still raises the patient's alert."""
    await asyncio.to_thread(cluster.start)
    tokens = []
    for device_id in ("watch-910", "watch-911"):
        out = await asyncio.to_thread(vitals, *add_device(database_url, device_id, "p-910", "icu"))
        tokens.append(json.loads(out.stdout)["token"])
    clinician = {"Authorization": f"Bearer {user(database_url, 'dr-lee', 'clinician')}"}
    streams = [f"{r.url}/v1/devices/stream" for r in cluster.replicas]
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(streams[0], headers={"Authorization": f"Bearer {tokens[0]}"}) as first,
    ):
        await first.receive_json()
        # The second device connects last, on the other replica: the patient is its.
        second_headers = {"Authorization": f"Bearer {tokens[1]}"}
        async with http.ws_connect(streams[1], headers=second_headers) as second:
            await second.receive_json()
            await asyncio.sleep(0.3)  # the first replica hears it lost the patient
            start = datetime.now(UTC) - timedelta(seconds=16)
            low = [reading("spo2", 80, start + timedelta(seconds=i)) for i in range(16)]
            await first.send_str(batch_text(1, low))
            assert (await first.receive_json())["seq"] == 1
            items: list[dict[str, object]] = []
            for _ in range(50):
                async with http.get(f"{cluster.url}/v1/alerts", headers=clinician) as r:
                    items = (await r.json())["items"]
                if items:
                    break
                await asyncio.sleep(0.1)
    assert [(a["patient_id"], a["rule"], a["device_id"]) for a in items] == [
        ("p-910", "spo2-low", "watch-910")
    ], items


async def test_an_observation_entered_on_another_replica_is_scored_by_the_patients_owner(
    cluster: Cluster, database_url: str
) -> None:
    """A patient scoring NEWS2 4 (low) streams to replica 1; a clinician enters
    "responds to Voice" through replica 2, which stores it and hands it to replica 1:
    the score becomes 7 and the owner raises the patient's NEWS2 high alert."""
    await asyncio.to_thread(cluster.start)
    out = await asyncio.to_thread(vitals, *add_device(database_url, "watch-920", "p-920", "icu"))
    device = {"Authorization": f"Bearer {json.loads(out.stdout)['token']}"}
    clinician = {"Authorization": f"Bearer {user(database_url, 'dr-lee', 'clinician')}"}
    owner, other = cluster.replicas
    # Respiration 22 and pulse 115 score 2 each; the rest 0: NEWS2 4, no single 3.
    values = {
        "resp_rate": 22,
        "heart_rate": 115,
        "spo2": 97,
        "systolic_bp": 120,
        "diastolic_bp": 80,
        "temperature": 37.0,
    }
    ts = datetime.now(UTC) - timedelta(seconds=1)
    stream = f"{owner.url}/v1/devices/stream"
    async with aiohttp.ClientSession() as http, http.ws_connect(stream, headers=device) as ws:
        await ws.receive_json()
        await ws.send_str(batch_text(1, [reading(m, v, ts) for m, v in values.items()]))
        assert (await ws.receive_json())["seq"] == 1
        news2 = f"{other.url}/v1/patients/p-920/news2"
        async with http.get(news2, headers=clinician) as r:
            assert r.status == 200, await r.text()
            assert ((await r.json())["score"], (await r.json())["band"]) == (4, "low")
        observe = f"{other.url}/v1/patients/p-920/observations"
        async with http.post(observe, json={"consciousness": "V"}, headers=clinician) as r:
            assert r.status in (200, 201), await r.text()
        rules: set[str] = set()
        for _ in range(50):
            async with http.get(f"{cluster.url}/v1/alerts", headers=clinician) as r:
                items = (await r.json())["items"]
            rules = {a["rule"] for a in items if a["patient_id"] == "p-920"}
            if "news2-high" in rules:
                break
            await asyncio.sleep(0.1)
    assert rules == {"news2-high", "news2-medium", "news2-low-medium"}, items
    assert {a["last_value"] for a in items} == {7}, items
