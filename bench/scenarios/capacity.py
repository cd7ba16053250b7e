"""Capacity: what an idle device connection costs the gateway in memory, and how long
one alert takes to reach every one of many dashboards.

Memory is the gateway's VmRSS with all devices connected and welcomed, minus VmRSS
before the first one connected, over the number connected. Fan-out: with the idle
devices still connected, dashboards subscribe, then one more device sends a violating
batch every other second; each raise is timed from that send to the moment the last
dashboard has it.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

from bench.config import BenchConfig
from bench.processes import rss_kib
from bench.scenarios.common import (
    Fleet,
    RunResult,
    gateway,
    merge_counts,
    share,
    stop_notes,
    worker_spec,
)
from bench.scenarios.ward import alert_latencies
from bench.stats import latency_summary

__all__ = ["run", "sizes_for_limit"]

# Descriptors the gateway needs besides its sockets (database, log, listening socket…).
FD_MARGIN = 256
_SETTLE_S = 1.0


def sizes_for_limit(connections: int, dashboards: int, nofile: int) -> tuple[int, int, str | None]:
    """Connections and dashboards that fit in `nofile` descriptors per process, and a
    note when they had to be scaled down."""
    room = nofile - FD_MARGIN
    if connections + dashboards + 1 <= room:
        return connections, dashboards, None
    dashboards = min(dashboards, room // 10)
    connections = max(0, room - dashboards - 1)
    return (
        connections,
        dashboards,
        (
            f"open-files hard limit {nofile}: scaled down to {connections} connections "
            f"and {dashboards} dashboards (raise `ulimit -Hn` for the full size)"
        ),
    )


def run(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # raised by the driver
    n_conn, n_dash, scaled = sizes_for_limit(cfg.idle_connections, cfg.fanout_dashboards, nofile)
    with gateway(cfg, workdir, n_conn + 1, rules=True) as (server, prov):
        idle_devices, trigger = prov.devices[:n_conn], prov.devices[n_conn:]
        time.sleep(_SETTLE_S)
        rss_start = rss_kib(server.pid)
        idle_specs = [
            worker_spec(cfg, workdir, f"idle-{i}", server, mode="idle", devices=part)
            for i, part in enumerate(share(idle_devices, cfg.workers))
        ]
        with Fleet(idle_specs, workdir, "idle") as idle:
            ready = idle.ready()
            connected = sum(m["devices"] for m in ready)
            connect_s = max(m["connect_s"] for m in ready)
            time.sleep(_SETTLE_S)
            rss_devices = rss_kib(server.pid)

            boards = [prov.dashboard_token] * n_dash
            dash_specs = [
                worker_spec(cfg, workdir, f"dash-{i}", server, mode="idle", dashboards=part)
                for i, part in enumerate(share(boards, cfg.workers))
            ]
            with Fleet(dash_specs, workdir, "dash") as dash:
                dash_ready = dash.ready()
                subscribed = sum(m["dashboards"] for m in dash_ready)
                time.sleep(_SETTLE_S)
                rss_dashboards = rss_kib(server.pid)

                rounds = 2 * cfg.fanout_alerts  # violate, clear, violate, clear…
                trigger_spec = worker_spec(
                    cfg, workdir, "trigger", server, mode="paced", devices=trigger,
                    batch_size=cfg.ward_batch_size, duration_s=rounds - 0.5,
                    rate_hz=1.0, raises_per_round=1,
                )  # fmt: skip
                with Fleet([trigger_spec], workdir, "trigger") as trig:
                    trig.ready()
                    trig.go(time.time() + 0.2)
                    (sent,) = trig.results(timeout=rounds + cfg.grace_s + 30)
                dash.stop()
                received = dash.results(timeout=30)
            idle.stop()
            idle.results(timeout=30)

    notes = stop_notes(server)
    timed, missed = alert_latencies(sent["raises"], [r["receipts"] for r in received], subscribed)
    fanout = latency_summary(timed)
    figures: dict[str, float | None] = {
        "connections": float(connected),
        "rss_per_connection_kib": (rss_devices - rss_start) / connected if connected else None,
        "connect_per_s": connected / connect_s if connect_s else None,
        "dashboards": float(subscribed),
        "rss_per_dashboard_kib": (rss_dashboards - rss_devices) / subscribed
        if subscribed
        else None,
        "fanout_p50_ms": fanout["p50"],
        "fanout_max_ms": fanout["max"],
        "fanout_missed": float(missed),
    }
    result = RunResult(
        figures,
        {
            "rss_kib": {"start": rss_start, "devices": rss_devices, "dashboards": rss_dashboards},
            "connect_errors": merge_counts([m["errors"] for m in (*ready, *dash_ready)]),
            "fanout_ms": timed,
            "lost_dashboards": merge_counts([r["lost_dashboards"] for r in received]),
        },
    )
    result.notes += notes
    if scaled:
        result.notes.append(scaled)
    if connected < n_conn:
        result.notes.append(f"only {connected} of {n_conn} device connections opened")
    if subscribed < n_dash:
        result.notes.append(f"only {subscribed} of {n_dash} dashboards subscribed")
    if missed:
        result.notes.append(f"{missed} fan-out alerts did not reach every dashboard")
    return result
