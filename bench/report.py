"""Results: the JSON document (`build_results`, pure), the machine it ran on, and the
table printed on the terminal.

Every figure is aggregated over the repetitions: the median is the figure, min and
max show the spread. Ratios gateway/baseline are taken between medians.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.config import TARGET_CLUSTER_SHARE
from bench.scenarios.common import RunResult
from bench.stats import aggregate_runs

__all__ = [
    "DISPLAY",
    "RATIOS",
    "RATIO_FLOORS",
    "SCHEMA_VERSION",
    "build_results",
    "machine_info",
    "render",
    "unit_of",
    "write_results",
]

SCHEMA_VERSION = 1
# Other processes using more than this many cores during a window make figures noisy.
NOISE_CORES = 0.15

# What the table shows, per scenario: (figure, label). The JSON holds every figure.
DISPLAY: dict[str, list[tuple[str, str]]] = {
    "baseline_ws": [
        ("readings_per_s", "acked readings/s"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("ack_max_ms", "ack latency max"),
        ("server_cpu_cores", "server CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("loadgen_cpu_share", "load generator share of CPU"),
    ],
    "baseline_sqlite": [("readings_per_s", "inserted readings/s")],
    "ingest": [
        ("readings_per_s", "durable readings/s (acked)"),
        ("db_readings_per_s", "readings/s stored in window (DB)"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("ack_max_ms", "ack latency max"),
        ("server_cpu_cores", "gateway CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("loadgen_cpu_share", "load generator share of CPU"),
        ("other_cpu_cores", "other processes' CPU"),
    ],
    "ward": [
        ("offered_readings_per_s", "offered readings/s"),
        ("acked_readings_per_s", "acked readings/s"),
        ("db_readings_per_s", "readings/s received in window, stored"),
        ("unacked_share", "batches unacked at the end"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("alerts_timed", "alerts timed"),
        ("alert_p50_ms", "alert latency p50 (all dashboards)"),
        ("alert_p99_ms", "alert latency p99 (all dashboards)"),
        ("alert_max_ms", "alert latency max"),
        ("alerts_missed", "alerts some dashboard missed"),
        ("server_cpu_cores", "gateway CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("loadgen_cpu_share", "load generator share of CPU"),
        ("other_cpu_cores", "other processes' CPU"),
    ],
    "fhir_export": [
        ("export_readings_per_s", "export rate, readings/s (alone)"),
        ("export_mib_per_s", "export NDJSON MiB/s (alone)"),
        ("export_rss_growth_mib", "gateway RSS growth during the export"),
        ("ward_acked_readings_per_s", "ward acked readings/s, no export"),
        ("ward_acked_exporting_readings_per_s", "ward acked readings/s, exports running"),
        ("ward_ack_p99_ms", "ward ack p99, no export"),
        ("ward_ack_p99_exporting_ms", "ward ack p99, exports running"),
        ("ack_p99_ratio", "ack p99 ratio (exporting / not)"),
        ("export_under_ward_readings_per_s", "export rate under the ward load"),
    ],
    "capacity": [
        ("connections", "idle device connections"),
        ("rss_per_connection_kib", "gateway RSS per connection"),
        ("connect_per_s", "connections opened/s"),
        ("dashboards", "dashboards"),
        ("rss_per_dashboard_kib", "gateway RSS per dashboard"),
        ("fanout_p50_ms", "one alert to every dashboard, p50"),
        ("fanout_max_ms", "one alert to every dashboard, max"),
        ("fanout_missed", "alerts some dashboard missed"),
    ],
    "pg_ingest": [
        ("readings_per_s", "durable readings/s (acked)"),
        ("db_readings_per_s", "readings/s stored in window (DB)"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("server_cpu_cores", "gateway CPU"),
        ("postgres_cpu_cores", "PostgreSQL CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("other_cpu_cores", "other processes' CPU"),
    ],
    "cluster_ingest": [
        ("readings_per_s", "durable readings/s (acked)"),
        ("db_readings_per_s", "readings/s stored in window (DB)"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("server_cpu_cores", "replicas' CPU (both)"),
        ("haproxy_cpu_cores", "HAProxy CPU"),
        ("postgres_cpu_cores", "PostgreSQL CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("other_cpu_cores", "other processes' CPU"),
    ],
    "pg_ward": [
        ("offered_readings_per_s", "offered readings/s"),
        ("acked_readings_per_s", "acked readings/s"),
        ("unacked_share", "batches unacked at the end"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("alerts_timed", "alerts timed"),
        ("alert_p50_ms", "alert latency p50 (all dashboards)"),
        ("alert_p99_ms", "alert latency p99 (all dashboards)"),
        ("alerts_missed", "alerts some dashboard missed"),
        ("server_cpu_cores", "gateway CPU"),
        ("postgres_cpu_cores", "PostgreSQL CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("other_cpu_cores", "other processes' CPU"),
    ],
    "cluster_ward": [
        ("offered_readings_per_s", "offered readings/s"),
        ("acked_readings_per_s", "acked readings/s"),
        ("unacked_share", "batches unacked at the end"),
        ("ack_p50_ms", "ack latency p50"),
        ("ack_p99_ms", "ack latency p99"),
        ("alerts_timed", "alerts timed (every dashboard)"),
        ("alert_same_p50_ms", "alert p50, raising replica's dashboards"),
        ("alert_same_p99_ms", "alert p99, raising replica's dashboards"),
        ("alert_other_p50_ms", "alert p50, other replica's dashboards"),
        ("alert_other_p99_ms", "alert p99, other replica's dashboards"),
        ("alerts_missed", "alerts some dashboard missed"),
        ("server_cpu_cores", "replicas' CPU (both)"),
        ("haproxy_cpu_cores", "HAProxy CPU"),
        ("postgres_cpu_cores", "PostgreSQL CPU"),
        ("loadgen_cpu_cores", "load generator CPU"),
        ("other_cpu_cores", "other processes' CPU"),
    ],
    "failover": [
        ("moved_devices", "devices on the killed replica"),
        ("reack_p50_ms", "kill to next ack, p50 (those devices)"),
        ("reack_p99_ms", "kill to next ack, p99 (those devices)"),
        ("reack_max_ms", "kill to next ack, max (those devices)"),
        ("reack_all_p99_ms", "kill to next ack, p99 (every device)"),
        ("devices_not_reacked", "devices never acked again"),
    ],
}

# (name, numerator scenario, figure, denominator scenario, figure)
_RPS = "readings_per_s"
RATIOS: list[tuple[str, str, str, str, str]] = [
    ("ingest_readings_vs_bare_aiohttp", "ingest", _RPS, "baseline_ws", _RPS),
    ("ingest_readings_vs_plain_sqlite", "ingest", _RPS, "baseline_sqlite", _RPS),
    ("ingest_ack_p50_vs_bare_aiohttp", "ingest", "ack_p50_ms", "baseline_ws", "ack_p50_ms"),
    ("ingest_ack_p99_vs_bare_aiohttp", "ingest", "ack_p99_ms", "baseline_ws", "ack_p99_ms"),
    ("pg_readings_vs_sqlite", "pg_ingest", _RPS, "ingest", _RPS),
    ("two_replicas_vs_one_readings", "cluster_ingest", _RPS, "pg_ingest", _RPS),
]
# Ratios the issue sets a floor for: a note says when a run's median is below it.
RATIO_FLOORS = {"two_replicas_vs_one_readings": TARGET_CLUSTER_SHARE}


def unit_of(figure: str) -> str:
    for suffix, unit in (
        ("_per_s", "/s"),
        ("_ms", "ms"),
        ("_kib", "KiB"),
        ("_mib", "MiB"),
        ("_ratio", "ratio"),
        ("_cores", "cores"),
        ("_share", "fraction"),
    ):
        if figure.endswith(suffix):
            return unit
    return "count"


def build_results(
    *,
    config: Mapping[str, Any],
    machine: Mapping[str, Any],
    gateway_settings: Mapping[str, Any],
    runs: Mapping[str, Sequence[RunResult | None]],
    titles: Mapping[str, str],
    started_at: str,
    finished_at: str,
    skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The results document; `runs` holds each scenario's repetitions (None = failed),
    `skipped` why a scenario could not run here."""
    scenarios: dict[str, Any] = {}
    notes = [f"{name}: skipped: {reason}" for name, reason in (skipped or {}).items()]
    for name, reps in runs.items():
        done = [r for r in reps if r is not None]
        aggregated = aggregate_runs(r.figures for r in done)
        scenario_notes = sorted({n for r in done for n in r.notes})
        failed = len(reps) - len(done)
        if failed:
            scenario_notes.append(f"{failed} of {len(reps)} repetitions failed")
        noisy = [
            v
            for r in done
            if (v := r.figures.get("other_cpu_cores")) is not None and v > NOISE_CORES
        ]
        if noisy:
            notes.append(
                f"{name}: other processes used up to {max(noisy):.2f} cores during "
                f"{len(noisy)} of {len(done)} measurement windows: figures are noisy"
            )
        scenarios[name] = {
            "title": titles.get(name, name),
            "figures": {key: {"unit": unit_of(key), **agg} for key, agg in aggregated.items()},
            "repetitions": [r.details for r in done],
            "notes": scenario_notes,
        }
    ratios: dict[str, Any] = {}
    for ratio, num_s, num_f, den_s, den_f in RATIOS:
        num = _median(scenarios, num_s, num_f)
        den = _median(scenarios, den_s, den_f)
        if num is not None and den:
            ratios[ratio] = {"value": num / den, "of": f"{num_s}.{num_f} / {den_s}.{den_f}"}
            floor = RATIO_FLOORS.get(ratio)
            if floor is not None and num / den < floor:
                notes.append(f"{ratio} = {num / den:.2f}: below the target of {floor:.2f}")
    return {
        "schema": SCHEMA_VERSION,
        "started_at": started_at,
        "finished_at": finished_at,
        "machine": dict(machine),
        "settings": {"bench": dict(config), "gateway": dict(gateway_settings)},
        "scenarios": scenarios,
        "ratios": ratios,
        "notes": notes,
    }


def _median(scenarios: Mapping[str, Any], scenario: str, figure: str) -> float | None:
    try:
        value = scenarios[scenario]["figures"][figure]["median"]
    except KeyError:
        return None
    return value if isinstance(value, int | float) else None


def write_results(doc: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


# -- the machine ---------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _filesystem(path: Path) -> str:
    """The filesystem type `path` lives on, from /proc/mounts (longest mount point)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if (
            len(parts) >= 3
            and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/"))
            and len(parts[1]) > len(best)
        ):
            best, kind = parts[1], parts[2]
    return kind


def machine_info(workdir: Path) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    meminfo = _read("/proc/meminfo").splitlines()
    mem_kib = next((int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal:")), 0)
    versions: dict[str, str | None] = {}
    for package in ("aiohttp", "pydantic", "pydantic-core", "SQLAlchemy", "aiosqlite", "uvloop"):
        try:
            versions[package.lower()] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package.lower()] = None
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "sqlite": sqlite3.sqlite_version,
        "event_loop": "uvloop" if versions["uvloop"] else "asyncio",
        "work_dir_filesystem": _filesystem(workdir),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
    }


# -- the terminal --------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "fraction":
        return f"{value:.0%}"
    if unit == "/s" or unit == "count":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
    return f"{value:,.2f}"


def _unit_label(unit: str) -> str:
    return {"fraction": "", "count": "", "/s": "/s"}.get(unit, unit)


def render(doc: Mapping[str, Any], console: Console) -> None:
    table = Table(title="vitals-gateway bench", title_justify="left")
    table.add_column("scenario")
    table.add_column("figure")
    table.add_column("median", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("unit")
    for name, scenario in doc["scenarios"].items():
        figures = scenario["figures"]
        first = True
        for key, label in DISPLAY.get(name, [(k, k) for k in figures]):
            if key not in figures:
                continue
            fig = figures[key]
            unit = fig["unit"]
            runs = len(fig["runs"])
            table.add_row(
                f"{name} (x{runs})" if first else "",
                label,
                _fmt(fig["median"], unit),
                _fmt(fig["min"], unit),
                _fmt(fig["max"], unit),
                _unit_label(unit),
                end_section=False,
            )
            first = False
        table.add_section()
    console.print(table)
    if doc["ratios"]:
        ratios = Table(title="gateway / baseline (medians)", title_justify="left")
        ratios.add_column("ratio")
        ratios.add_column("value", justify="right")
        ratios.add_column("of")
        for name, ratio in doc["ratios"].items():
            ratios.add_row(name, f"{ratio['value']:.2f}", ratio["of"])
        console.print(ratios)
    m = doc["machine"]
    console.print(
        f"machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB, "
        f"Linux {m['kernel']}, {m['python']}, {m['event_loop']}, "
        f"work dir on {m['work_dir_filesystem']}"
    )
    for name, scenario in doc["scenarios"].items():
        for rep in scenario["repetitions"]:
            profile = rep.get("profile")
            if profile:
                console.print(f"[bold]{name}: gateway profile (py-spy), % of samples[/]")
                for kind in ("own", "inclusive"):
                    console.print(f"  {kind}:")
                    for function, pct in profile[kind][:12]:
                        console.print(f"    {pct:5.1f}%  {function}")
        for note in scenario["notes"]:
            console.print(f"[yellow]{name}: {note}[/]")
    for note in doc["notes"]:
        console.print(f"[yellow]{note}[/]")
