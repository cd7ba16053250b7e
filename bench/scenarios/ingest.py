"""Sustained ingest: N devices, one 10-reading batch in flight each, as fast as acks
come back, against the gateway and against baseline (a) with the same load generator.

Throughput counts acks received in the measurement window (after the warm-up); for
the gateway it is checked against the database once the gateway has stopped: every
acked reading must be there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.config import BenchConfig
from bench.loadgen import WorkerResult
from bench.processes import PidSource
from bench.scenarios.common import (
    Fleet,
    Profiler,
    RunResult,
    baseline_server,
    count_readings,
    cpu_figures,
    gateway,
    measure_window,
    merge_counts,
    share,
    stop_notes,
    worker_spec,
)
from bench.stats import latency_summary
from gateway.client.process import ServerProcess

__all__ = ["drive", "run_baseline_ws", "run_gateway"]


def drive(
    cfg: BenchConfig,
    workdir: Path,
    server: ServerProcess,
    devices: list[list[str]],
    *,
    profile: bool = False,
    server_pids: Sequence[int] | None = None,
    more_cpu: Mapping[str, PidSource] | None = None,
) -> tuple[RunResult, list[WorkerResult], tuple[float, float]]:
    """The ingest load on `server` (a gateway, or a load balancer in front of
    `server_pids`, the replicas); CPU also sampled for the `more_cpu` roles."""
    specs = [
        worker_spec(
            cfg, workdir, f"loadgen-{i}", server, mode="closed", devices=part,
            batch_size=cfg.batch_size, warmup_s=cfg.warmup_s, duration_s=cfg.duration_s,
        )
        for i, part in enumerate(share(devices, cfg.workers))
    ]  # fmt: skip
    with Fleet(specs, workdir, "loadgen") as fleet:
        ready = fleet.ready()
        t0 = time.time() + 0.5
        window = (t0 + cfg.warmup_s, t0 + cfg.warmup_s + cfg.duration_s)
        fleet.go(t0)
        profiler = None
        if profile:
            time.sleep(max(0.0, window[0] - time.time()))
            profiler = Profiler(server.pid, cfg.duration_s, workdir / "profile.txt")
        cores = measure_window(
            server.pid if server_pids is None else server_pids,
            fleet, t0, cfg.warmup_s, cfg.duration_s, more=more_cpu,
        )  # fmt: skip
        results = fleet.results(timeout=cfg.grace_s + 30)

    acked = sum(r["acked_in_window"] for r in results)
    latencies = [v for r in results for v in r["latencies_ms"]]
    lat = latency_summary(latencies)
    connected = sum(r["devices"] for r in results)
    figures: dict[str, float | None] = {
        "readings_per_s": acked * cfg.batch_size / cfg.duration_s,
        "ack_p50_ms": lat["p50"],
        "ack_p99_ms": lat["p99"],
        "ack_max_ms": lat["max"],
        **cpu_figures(cores),
    }
    result = RunResult(
        figures,
        {
            "devices_connected": connected,
            "connect_errors": merge_counts([m["errors"] for m in ready]),
            "acked_batches_in_window": acked,
            "acked_batches_total": sum(r["acked_total"] for r in results),
            "error_frames": sum(r["error_frames"] for r in results),
            "error_samples": [s for r in results for s in r["error_samples"]][:5],
            "lost_devices": merge_counts([r["lost_devices"] for r in results]),
        },
    )
    if connected < len(devices):
        result.notes.append(f"only {connected} of {len(devices)} devices connected")
    if profiler is not None:
        if profiler.available:
            result.details["profile"] = profiler.summary()
        else:
            result.notes.append("--profile: py-spy not found (pip install py-spy)")
    return result, results, window


def run_gateway(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    with gateway(cfg, workdir, cfg.devices) as (server, prov):
        result, _, window = drive(
            cfg, workdir, server, prov.devices, profile=cfg.profile and rep == 0
        )
    # The gateway has stopped: the database holds everything it acked.
    result.notes += stop_notes(server)
    stored = count_readings(prov.db_path)
    in_window = count_readings(prov.db_path, window)
    acked_readings = result.details["acked_batches_total"] * cfg.batch_size
    result.figures["db_readings_per_s"] = in_window / cfg.duration_s
    result.details.update(readings_stored=stored, readings_acked=acked_readings)
    if stored < acked_readings:
        result.notes.append(f"DURABILITY: {acked_readings} readings acked, {stored} stored")
    return result


def run_baseline_ws(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    # Tokens are not checked by the baseline: any bearer goes.
    devices = [[f"bench-{i:05d}", f"p-{i:05d}", "baseline"] for i in range(cfg.devices)]
    with baseline_server(workdir) as server:
        result, _, _ = drive(cfg, workdir, server, devices)
    return result
