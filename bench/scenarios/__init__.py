"""The scenarios, one module each; `GROUPS` maps each `--only` name to the runs it
makes, in order. A run takes (config, its own work folder, repetition index)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.config import BenchConfig
from bench.scenarios import baseline, capacity, fhir, ingest, postgres, ward
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
    "postgres": [
        ("pg_ingest", postgres.run_pg_ingest),
        ("cluster_ingest", postgres.run_cluster_ingest),
        ("pg_ward", postgres.run_pg_ward),
        ("cluster_ward", postgres.run_cluster_ward),
        ("failover", postgres.run_failover),
    ],
    "fhir": [("fhir_export", fhir.run)],
}

TITLES = {
    "baseline_ws": "Baseline (a): bare aiohttp WebSocket server, same load",
    "baseline_sqlite": "Baseline (b): plain sqlite3 batched inserts, same schema",
    "ingest": "Sustained ingest: gateway",
    "ward": "Ward load",
    "capacity": "Capacity",
    "pg_ingest": "Sustained ingest: one replica on PostgreSQL",
    "cluster_ingest": "Sustained ingest: two replicas through HAProxy",
    "pg_ward": "Ward load: one replica on PostgreSQL",
    "cluster_ward": "Ward load: two replicas through HAProxy, dashboards on each",
    "failover": "Failover: a replica SIGKILLed under devices streaming through HAProxy",
    "fhir_export": "FHIR Bulk Data export of the readings, alone and under the ward load",
}
