"""Ward load: many devices each sending one small batch per second (open loop, spread
evenly over the second), with dashboards subscribed, and alerts raised and cleared all
the while by a rotating subset of devices.

Throughput counts acks that arrive in the measurement window; ack latency is that of
the batches sent in the window (those still unacked at the end are counted apart, as
`unacked_share`). Alert latency runs from the device sending the violating batch to
the moment the last dashboard has the `alert` event; an alert is named by (patient,
first value), which the load generator makes unique per raise. Only raises sent in
the window count; a raise some dashboard never got is reported, not timed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.loadgen import WorkerResult
from bench.processes import PidSource
from bench.scenarios.common import (
    Fleet,
    Profiler,
    RunResult,
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

__all__ = ["WardRun", "alert_latencies", "drive", "raises_per_second", "result_of", "run"]


def raises_per_second(min_alerts: int, duration_s: float) -> int:
    """Raises per second that give at least `min_alerts` in the window, with margin."""
    return max(1, math.ceil(1.25 * min_alerts / duration_s))


def alert_latencies(
    raises: list[tuple[str, float]],
    receipts: list[dict[str, tuple[float, int]]],
    dashboards: int,
) -> tuple[list[float], int]:
    """Latency (ms) of each raise every dashboard received, and how many some missed.

    `receipts` come from several workers: per alert key, the latest receipt among that
    worker's dashboards and how many of them had it.
    """
    last: dict[str, float] = {}
    count: dict[str, int] = {}
    for part in receipts:
        for key, (t, n) in part.items():
            last[key] = max(last.get(key, 0.0), t)
            count[key] = count.get(key, 0) + n
    latencies, missed = [], 0
    for key, sent in raises:
        if count.get(key, 0) >= dashboards:
            latencies.append((last[key] - sent) * 1000)
        else:
            missed += 1
    return latencies, missed


@dataclass(frozen=True)
class WardRun:
    """What one ward load produced: each worker's result, in the order of the
    `dashboard_servers` it was given (worker i's dashboards are on server i mod n)."""

    results: list[WorkerResult]
    ready: list[dict[str, Any]]
    cores: dict[str, float]
    window: tuple[float, float]
    raises_per_second: int
    profile: dict[str, list[tuple[str, float]]] | None


def drive(
    cfg: BenchConfig,
    workdir: Path,
    server: ServerProcess,
    devices: list[list[str]],
    dashboard_token: str,
    *,
    dashboard_servers: Sequence[ServerProcess] = (),
    profile: bool = False,
    server_pids: Sequence[int] | None = None,
    more_cpu: Mapping[str, PidSource] | None = None,
) -> WardRun:
    """The ward load: devices on `server`, dashboards on `dashboard_servers` (default:
    `server`) shared among the workers; CPU of `server` (or of `server_pids`, the
    replicas behind it) and of the `more_cpu` roles."""
    boards_on = list(dashboard_servers) or [server]
    workers = max(cfg.workers, len(boards_on))
    per_second = raises_per_second(cfg.min_alerts, cfg.duration_s)
    per_worker = math.ceil(per_second / workers)
    boards = [dashboard_token] * cfg.ward_dashboards
    specs = [
        worker_spec(
            cfg, workdir, f"ward-{i}", server, mode="paced", devices=devs,
            dashboards=dash, batch_size=cfg.ward_batch_size, warmup_s=cfg.warmup_s,
            duration_s=cfg.duration_s, rate_hz=1.0, raises_per_round=per_worker,
            dashboard_server=boards_on[i % len(boards_on)],
        )
        for i, (devs, dash) in enumerate(
            zip(share(devices, workers), share(boards, workers), strict=True)
        )
    ]  # fmt: skip
    with Fleet(specs, workdir, "ward") as fleet:
        ready = fleet.ready()
        t0 = time.time() + 1.0
        fleet.go(t0)
        profiler = None
        if profile:
            time.sleep(max(0.0, t0 + cfg.warmup_s - time.time()))
            profiler = Profiler(server.pid, cfg.duration_s, workdir / "profile.txt")
        cores = measure_window(
            server.pid if server_pids is None else server_pids,
            fleet, t0, cfg.warmup_s, cfg.duration_s, more=more_cpu,
        )  # fmt: skip
        results = fleet.results(timeout=cfg.grace_s + 30)
    window = (t0 + cfg.warmup_s, t0 + cfg.warmup_s + cfg.duration_s)
    summary = profiler.summary() if profiler is not None and profiler.available else None
    return WardRun(results, ready, cores, window, per_worker * workers, summary)


def result_of(cfg: BenchConfig, ward: WardRun, received: int) -> RunResult:
    """The figures, details and notes of a ward load; `received`: readings stored whose
    `received_us` falls in the window (read once the servers have stopped)."""
    results = ward.results
    dashboards = sum(r["dashboards"] for r in results)
    acks = latency_summary([v for r in results for v in r["latencies_ms"]])
    raises = [(key, t) for r in results for key, t in r["raises"]]
    timed, missed = alert_latencies(raises, [r["receipts"] for r in results], dashboards)
    alerts = latency_summary(timed)
    batch = cfg.ward_batch_size
    sent = sum(r["sent_in_window"] for r in results)
    unacked = sum(r["unacked_sent_in_window"] for r in results)
    figures: dict[str, float | None] = {
        "offered_readings_per_s": sent * batch / cfg.duration_s,
        "acked_readings_per_s": sum(r["acked_in_window"] for r in results) * batch / cfg.duration_s,
        "db_readings_per_s": received / cfg.duration_s,
        "unacked_share": unacked / sent if sent else None,
        "ack_p50_ms": acks["p50"],
        "ack_p99_ms": acks["p99"],
        "ack_max_ms": acks["max"],
        "alerts_timed": float(len(timed)),
        "alerts_missed": float(missed),
        "alert_p50_ms": alerts["p50"],
        "alert_p99_ms": alerts["p99"],
        "alert_max_ms": alerts["max"],
        "pace_lag_max_ms": max(r["pace_lag_max_ms"] for r in results),
        **cpu_figures(ward.cores),
    }
    result = RunResult(
        figures,
        {
            "devices_connected": sum(r["devices"] for r in results),
            "dashboards_connected": dashboards,
            "raises_per_second": ward.raises_per_second,
            "connect_errors": merge_counts([m["errors"] for m in ward.ready]),
            "dashboard_events": sum(r["dashboard_events"] for r in results),
            "error_frames": sum(r["error_frames"] for r in results),
            "error_samples": [s for r in results for s in r["error_samples"]][:5],
            "lost_devices": merge_counts([r["lost_devices"] for r in results]),
            "lost_dashboards": merge_counts([r["lost_dashboards"] for r in results]),
        },
    )
    if sent and unacked / sent > 0.01:
        result.notes.append(
            f"the gateway fell behind: {unacked / sent:.0%} of the batches sent in the window "
            f"were not acked {cfg.grace_s:.0f} s after it; latencies are lower bounds"
        )
    if len(timed) < cfg.min_alerts:
        result.notes.append(f"only {len(timed)} alerts timed (wanted {cfg.min_alerts})")
    if missed:
        result.notes.append(f"{missed} alerts did not reach every dashboard")
    if ward.profile is not None:
        result.details["profile"] = ward.profile
    return result


def run(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    with gateway(cfg, workdir, cfg.ward_devices, rules=True) as (server, prov):
        ward = drive(
            cfg, workdir, server, prov.devices, prov.dashboard_token,
            profile=cfg.profile and rep == 0,
        )  # fmt: skip
    result = result_of(cfg, ward, count_readings(prov.db_path, ward.window))
    result.notes += stop_notes(server)
    return result
