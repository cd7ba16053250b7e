"""Replicas on PostgreSQL (`--only postgres`), each run on a database of its own,
created and dropped by the bench, with `synchronous_commit` as the server has it (on):

- `pg_ingest`, `pg_ward`: one replica direct on PostgreSQL, the ingest and ward loads
  of `ingest.py` and `ward.py`, the ward's dashboards on that replica;
- `cluster_ingest`, `cluster_ward`: two replicas behind HAProxy (`Cluster`, the
  shipped `deploy/haproxy.cfg`), devices through HAProxy; the ward's dashboards
  connect to the replicas directly, half to each, so each alert is timed on the
  dashboards of the replica that raised it (the owner of its patient, from
  `patient_owners`: the replica its device streams to) and on the other's;
- `failover`: devices streaming through HAProxy with the simulator's own client (its
  reconnect backoff), one replica SIGKILLed; per device, the time from the kill to its
  first ack after it.

Without a PostgreSQL server each run is skipped, saying why; the cluster runs too
without HAProxy. CPU is sampled for the replicas, the load generators, HAProxy and
every PostgreSQL process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import pg
from bench.config import (
    TARGET_ALERT_OTHER_P99_MS,
    TARGET_ALERT_SAME_P99_MS,
    TARGET_PG_INGEST_PER_S,
    TARGET_REACK_P99_S,
    BenchConfig,
)
from bench.processes import BenchError, BenchSkipped, PidSource
from bench.scenarios import ingest, ward
from bench.scenarios.common import BENCH_RULES, RunResult, provision, stop_notes
from bench.stats import latency_summary
from devices.client import AckedCallback, ClientOptions, Clock, DeviceClient, DeviceCredentials
from devices.outbox import Batch
from devices.physiology import Baseline, Physiology, Sampler
from devices.scenarios import Scenario
from gateway.client.cluster import HAPROXY, Cluster
from gateway.client.process import ServerFailed, ServerProcess, vitals_serve

__all__ = [
    "SideLatencies",
    "latencies_by_side",
    "reack_times",
    "run_cluster_ingest",
    "run_cluster_ward",
    "run_failover",
    "run_pg_ingest",
    "run_pg_ward",
]

REPLICAS = 2
# Recorded with each run: what "durable" means on this server.
_SERVER_SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
_OPTIONS = ("--log-level", "WARNING")  # INFO logs every connect: setup noise


def _server_cpu() -> dict[str, PidSource]:
    return {"postgres": pg.server_pids}


def _need_haproxy() -> None:
    if shutil.which(HAPROXY) is None:
        raise BenchSkipped("haproxy is not installed (apt-get install haproxy)")


def _rules_options(workdir: Path, rules: bool) -> list[str]:
    if not rules:
        return []
    path = workdir / "bench-rules.toml"
    path.write_text(BENCH_RULES)
    return ["--rules", str(path)]


@contextlib.contextmanager
def _provisioned(workdir: Path, devices: int) -> Iterator[tuple[str, list[list[str]], str]]:
    """A database of its own with `devices` devices: (URL, devices, dashboard token)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with pg.database() as url:
        creds, token = asyncio.run(provision(url, devices))
        yield url, creds, token


@contextlib.contextmanager
def _replica(cfg: BenchConfig, workdir: Path, url: str, rules: bool) -> Iterator[ServerProcess]:
    server = vitals_serve(
        "--database-url", url, *_OPTIONS, *_rules_options(workdir, rules),
        log_dir=workdir, own_session=True,
    )  # fmt: skip
    try:
        try:
            server.start(timeout=30)
        except ServerFailed as e:
            raise BenchError(str(e)) from e
        yield server
    finally:
        server.stop(grace=cfg.grace_s + 30)


@contextlib.contextmanager
def _cluster(workdir: Path, url: str, rules: bool) -> Iterator[Cluster]:
    cluster = Cluster(
        url, workdir, replicas=REPLICAS, options=[*_OPTIONS, *_rules_options(workdir, rules)]
    )
    try:
        cluster.start(timeout=60)
    except ServerFailed as e:
        raise BenchError(str(e)) from e
    try:
        yield cluster
    finally:
        cluster.stop()


def _cluster_cpu(cluster: Cluster) -> tuple[list[int], dict[str, PidSource]]:
    return [r.pid for r in cluster.replicas], {"haproxy": [cluster.haproxy.pid], **_server_cpu()}


def _cluster_notes(cluster: Cluster) -> list[str]:
    notes = []
    for replica in cluster.replicas:
        if replica.proc is not None and replica.proc.returncode == -signal.SIGTERM:
            # Cluster.stop signals every replica, then stops each in turn, which signals
            # it again: a replica whose shutdown ended meanwhile (its handler gone) dies
            # of that second SIGTERM. What it acked is checked in the database.
            notes.append(f"{replica.name}: ended by a second SIGTERM from Cluster.stop")
        else:
            notes += [f"{replica.name}: {n}" for n in stop_notes(replica)]
    return notes


# -- ingest --------------------------------------------------------------------------


def _ingest_result(
    cfg: BenchConfig, url: str, result: RunResult, window: tuple[float, float]
) -> RunResult:
    """Add what the database holds (the servers have stopped) to an ingest run."""
    stored = pg.count_readings(url)
    in_window = pg.count_readings(url, window)
    acked = result.details["acked_batches_total"] * cfg.batch_size
    result.figures["db_readings_per_s"] = in_window / cfg.duration_s
    result.details.update(
        readings_stored=stored,
        readings_acked=acked,
        postgres=pg.settings(url, _SERVER_SETTINGS),
    )
    if stored < acked:
        result.notes.append(f"DURABILITY: {acked} readings acked, {stored} stored")
    return result


def run_pg_ingest(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    with _provisioned(workdir, cfg.devices) as (url, devices, _):
        with _replica(cfg, workdir, url, rules=False) as server:
            result, _, window = ingest.drive(
                cfg, workdir, server, devices, profile=cfg.profile and rep == 0,
                more_cpu=_server_cpu(),
            )  # fmt: skip
        result.notes += stop_notes(server)
        result = _ingest_result(cfg, url, result, window)
    rate = result.figures["readings_per_s"] or 0.0
    if rate < TARGET_PG_INGEST_PER_S:
        result.notes.append(
            f"below the target of {TARGET_PG_INGEST_PER_S:,} durable readings/s "
            f"(server CPU {result.figures['server_cpu_cores']:.2f} cores, PostgreSQL "
            f"{result.figures['postgres_cpu_cores']:.2f}, load generators "
            f"{result.figures['loadgen_cpu_cores']:.2f})"
        )
    return result


def run_cluster_ingest(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    _need_haproxy()
    with _provisioned(workdir, cfg.devices) as (url, devices, _):
        with _cluster(workdir, url, rules=False) as cluster:
            pids, more = _cluster_cpu(cluster)
            result, _, window = ingest.drive(
                cfg, workdir, cluster.haproxy, devices, server_pids=pids, more_cpu=more
            )
            split = _split(pg.patient_owners(url))
        result.notes += _cluster_notes(cluster)
        result.details["patients_per_replica"] = split
        result = _ingest_result(cfg, url, result, window)
    return result


def _split(owners: Mapping[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for replica in owners.values():
        counts[replica] = counts.get(replica, 0) + 1
    return dict(sorted(counts.items()))


# -- ward ----------------------------------------------------------------------------


def run_pg_ward(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    with _provisioned(workdir, cfg.ward_devices) as (url, devices, token):
        with _replica(cfg, workdir, url, rules=True) as server:
            load = ward.drive(
                cfg, workdir, server, devices, token, profile=cfg.profile and rep == 0,
                more_cpu=_server_cpu(),
            )  # fmt: skip
        result = ward.result_of(cfg, load, pg.count_readings(url, load.window))
    result.notes += stop_notes(server)
    _check_alert_target(result, "alert_p99_ms", TARGET_ALERT_SAME_P99_MS, "on the replica")
    return result


@dataclass(frozen=True)
class SideLatencies:
    """Alert latencies (ms) on the dashboards of the replica that raised each alert
    (`same`) and of the other replicas (`other`); per side, raises some dashboard there
    missed; raises whose patient no replica owned (not timed)."""

    same: list[float]
    other: list[float]
    missed_same: int
    missed_other: int
    unowned: int


def latencies_by_side(
    raises: Sequence[tuple[str, float]],
    boards: Sequence[tuple[str, Mapping[str, tuple[float, int]], int]],
    owners: Mapping[str, str],
) -> SideLatencies:
    """Each raise `(alert key, send time)` timed per group of dashboards `(replica id,
    receipts, dashboards)`: from the send to the last of that group's dashboards having
    it, on the side of the replica that owns the alert's patient (`owners`). Groups on
    one replica (several workers) are merged first, as `ward.alert_latencies` does."""
    merged: dict[str, tuple[dict[str, tuple[float, int]], int]] = {}
    for replica, receipts, dashboards in boards:
        got, total = merged.get(replica, ({}, 0))
        for key, (t, n) in receipts.items():
            last, count = got.get(key, (0.0, 0))
            got[key] = (max(last, t), count + n)
        merged[replica] = (got, total + dashboards)
    same: list[float] = []
    other: list[float] = []
    missed = {"same": 0, "other": 0}
    unowned = 0
    for key, sent in raises:
        owner = owners.get(key.partition("|")[0])
        if owner is None:
            unowned += 1
            continue
        for replica, (got, dashboards) in merged.items():
            side = "same" if replica == owner else "other"
            last, count = got.get(key, (0.0, 0))
            if dashboards and count >= dashboards:
                (same if side == "same" else other).append((last - sent) * 1000)
            elif dashboards:
                missed[side] += 1
    return SideLatencies(same, other, missed["same"], missed["other"], unowned)


def run_cluster_ward(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    _need_haproxy()
    with _provisioned(workdir, cfg.ward_devices) as (url, devices, token):
        with _cluster(workdir, url, rules=True) as cluster:
            pids, more = _cluster_cpu(cluster)
            boards_on = cluster.replicas
            load = ward.drive(
                cfg, workdir, cluster.haproxy, devices, token, dashboard_servers=boards_on,
                server_pids=pids, more_cpu=more,
            )  # fmt: skip
            owners = pg.patient_owners(url)
        result = ward.result_of(cfg, load, pg.count_readings(url, load.window))
    result.notes += _cluster_notes(cluster)
    groups = [
        (boards_on[i % len(boards_on)].name, r["receipts"], r["dashboards"])
        for i, r in enumerate(load.results)
    ]
    raises = [(key, t) for r in load.results for key, t in r["raises"]]
    sides = latencies_by_side(raises, groups, owners)
    same, other = latency_summary(sides.same), latency_summary(sides.other)
    result.figures.update(
        alert_same_p50_ms=same["p50"],
        alert_same_p99_ms=same["p99"],
        alert_same_max_ms=same["max"],
        alert_other_p50_ms=other["p50"],
        alert_other_p99_ms=other["p99"],
        alert_other_max_ms=other["max"],
    )
    result.details.update(
        patients_per_replica=_split(owners),
        alerts_missed_same=sides.missed_same,
        alerts_missed_other=sides.missed_other,
        alerts_unowned=sides.unowned,
    )
    _check_alert_target(result, "alert_same_p99_ms", TARGET_ALERT_SAME_P99_MS, "same replica")
    _check_alert_target(result, "alert_other_p99_ms", TARGET_ALERT_OTHER_P99_MS, "other replica")
    return result


def _check_alert_target(result: RunResult, figure: str, target: float, where: str) -> None:
    value = result.figures.get(figure)
    if value is not None and value > target:
        result.notes.append(f"alert p99 {where} {value:.0f} ms: above the target of {target:.0f}")


# -- failover ------------------------------------------------------------------------


def reack_times(
    kill_at: float, acks: Mapping[str, Sequence[float]]
) -> tuple[dict[str, float], list[str]]:
    """Per device, seconds from `kill_at` to its first ack after it; and the devices
    with none."""
    times: dict[str, float] = {}
    missing: list[str] = []
    for device, stamps in acks.items():
        after = [t for t in stamps if t > kill_at]
        if after:
            times[device] = min(after) - kill_at
        else:
            missing.append(device)
    return times, sorted(missing)


@dataclass(frozen=True)
class _Failover:
    kill_at: float
    victim: str
    acks: dict[str, list[float]]
    moved: set[str]  # devices whose stream the kill cut


def _device_client(
    session: aiohttp.ClientSession,
    url: str,
    cred: list[str],
    index: int,
    count: int,
    cfg: BenchConfig,
    clock: Clock,
    on_ack: AckedCallback,
) -> DeviceClient:
    """A device as `vitals simulate` runs one, on a scenario with no episodes (no
    silences, no alarms): it only streams."""
    device_id, patient_id, token = cred
    rng = random.Random(f"failover:{index}")
    scenario = Scenario(name="bench-failover")
    physiology = Physiology(Baseline.draw(rng), random.Random(rng.getrandbits(64)))
    sampler = Sampler(physiology, scenario.sampling.model_dump(), rng)
    options = ClientOptions(
        rate=cfg.failover_rate_hz,
        tick_phase=rng.uniform(0, 1 / cfg.failover_rate_hz),
        connect_delay=index / count,  # a fleet's first connections over a second
    )
    credentials = DeviceCredentials(id=device_id, patient_id=patient_id, token=token)
    return DeviceClient(session, url, credentials, sampler, clock, options, on_ack)


async def _stream_through_kill(
    cfg: BenchConfig, cluster: Cluster, url: str, devices: list[list[str]]
) -> _Failover:
    acks: dict[str, list[float]] = {d[0]: [] for d in devices}

    def on_ack(device_id: str, batch: Batch, via: str) -> None:
        if via == "ack":  # not the batches a welcome confirmed: an ack received
            acks[device_id].append(time.time())

    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=15)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        clock = Clock.now()
        clients = [
            _device_client(session, cluster.url, d, i, len(devices), cfg, clock, on_ack)
            for i, d in enumerate(devices)
        ]
        tasks = [asyncio.create_task(c.run(stop, drain_timeout=1.0)) for c in clients]
        try:
            deadline = time.monotonic() + 30
            while any(len(a) < 2 for a in acks.values()):
                if time.monotonic() > deadline:
                    slow = sum(len(a) < 2 for a in acks.values())
                    raise BenchError(f"{slow} devices not streaming through HAProxy after 30 s")
                await asyncio.sleep(0.1)
            await asyncio.sleep(cfg.failover_steady_s)
            owners = await asyncio.to_thread(pg.patient_owners, url)
            split = _split(owners)
            # The replica with more devices: more re-acks to time.
            victim = max(range(REPLICAS), key=lambda i: split.get(cluster.replica(i).name, 0))
            reconnects = {c.device_id: c.stats.reconnects for c in clients}
            kill_at = time.time()
            await asyncio.to_thread(cluster.kill, victim, signal.SIGKILL)
            deadline = time.monotonic() + cfg.failover_wait_s
            while any(not a or a[-1] <= kill_at for a in acks.values()):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the survivors' next acks: not timed, just seen
            moved = {
                c.device_id
                for c in clients
                if c.stats.reconnects > reconnects[c.device_id] or not c.stats.connected
            }
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    return _Failover(kill_at, cluster.replica(victim).name, acks, moved)


def run_failover(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    _need_haproxy()
    with (
        _provisioned(workdir, cfg.failover_devices) as (url, devices, _),
        _cluster(workdir, url, rules=False) as cluster,
    ):
        outcome = asyncio.run(_stream_through_kill(cfg, cluster, url, devices))
    times, missing = reack_times(outcome.kill_at, outcome.acks)
    moved_ms = [times[d] * 1000 for d in outcome.moved if d in times]
    every_ms = [t * 1000 for t in times.values()]
    moved, every = latency_summary(moved_ms), latency_summary(every_ms)
    result = RunResult(
        {
            "reack_p50_ms": moved["p50"],
            "reack_p99_ms": moved["p99"],
            "reack_max_ms": moved["max"],
            "reack_all_p99_ms": every["p99"],
            "moved_devices": float(len(outcome.moved)),
            "devices_not_reacked": float(len(missing)),
        },
        {
            "killed": outcome.victim,
            "devices": len(devices),
            "moved_devices": len(outcome.moved),
            "not_reacked": missing[:10],
            "rate_hz": cfg.failover_rate_hz,
        },
    )
    if missing:
        result.notes.append(
            f"{len(missing)} devices had no ack within {cfg.failover_wait_s:.0f} s of the kill"
        )
    p99 = moved["p99"]
    if p99 is not None and p99 > TARGET_REACK_P99_S * 1000:
        result.notes.append(
            f"re-ack p99 {p99 / 1000:.1f} s: above the target of {TARGET_REACK_P99_S:.0f} s"
        )
    return result
