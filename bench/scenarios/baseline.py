"""Baselines: (a) the bare aiohttp WebSocket server under the ingest load (see
`bench.scenarios.ingest.run_baseline_ws`), and (b) plain sqlite3 batched inserts of
the same rows into the gateway's schema."""

from __future__ import annotations

import time
from pathlib import Path

from bench import sqlite_baseline
from bench.config import BenchConfig
from bench.scenarios.common import RunResult
from bench.scenarios.ingest import run_baseline_ws

__all__ = ["run_baseline_ws", "run_sqlite"]


def run_sqlite(cfg: BenchConfig, workdir: Path, rep: int) -> RunResult:
    workdir.mkdir(parents=True, exist_ok=True)
    rows = sqlite_baseline.make_rows(
        cfg.baseline_rows, cfg.devices, cfg.batch_size, int(time.time() * 1_000_000)
    )
    rate = sqlite_baseline.measure(workdir / "baseline.db", rows, cfg.sqlite_txn_rows)
    return RunResult(
        {"readings_per_s": rate},
        {"rows": len(rows), "transaction_rows": cfg.sqlite_txn_rows, "synchronous": "FULL"},
    )
