"""The scenarios, one module each; `GROUPS` maps each `--only` name to the runs it
makes, in order. A run takes (config, its own work folder, repetition index)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.config import BenchConfig
from bench.scenarios import baseline, capacity, ingest, ward
from bench.scenarios.common import RunResult

__all__ = ["GROUPS", "TITLES", "RunResult", "ScenarioRun"]

ScenarioRun = Callable[[BenchConfig, Path, int], RunResult]

GROUPS: dict[str, list[tuple[str, ScenarioRun]]] = {
    "baseline": [
        ("baseline_ws", baseline.run_baseline_ws),
        ("baseline_sqlite", baseline.run_sqlite),
    ],
    "ingest": [("ingest", ingest.run_gateway)],
    "ward": [("ward", ward.run)],
    "capacity": [("capacity", capacity.run)],
}

TITLES = {
    "baseline_ws": "Baseline (a): bare aiohttp WebSocket server, same load",
    "baseline_sqlite": "Baseline (b): plain sqlite3 batched inserts, same schema",
    "ingest": "Sustained ingest: gateway",
    "ward": "Ward load",
    "capacity": "Capacity",
}
