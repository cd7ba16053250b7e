"""Baseline (b): the same rows inserted with plain `sqlite3`, no gateway in the way.

The file gets the gateway's tables and indexes (created from `gateway.storage.schema`
with SQLAlchemy) and its durability: WAL, `synchronous=FULL`. Rows are the ones a
device batch produces, inserted with `executemany` in transactions of `txn_rows`.
Building the rows is not timed; inserting and committing them is.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import create_engine

from bench.loadgen import NORMAL_VALUES
from gateway.storage.schema import Base

__all__ = ["make_rows", "measure"]

_INSERT = (
    "INSERT INTO readings (device_id, patient_id, metric, ts_us, value, received_us, seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
Row = tuple[str, str, str, int, float, int, int]


def make_rows(count: int, devices: int, batch_size: int, start_us: int) -> list[Row]:
    """`count` readings as the gateway would store them: `devices` devices taking turns
    sending `batch_size`-reading batches, 1 ms apart."""
    rows: list[Row] = []
    seqs = [0] * devices
    batch = 0
    while len(rows) < count:
        d = batch % devices
        seqs[d] += 1
        ts = start_us + batch * 1000
        for i in range(min(batch_size, count - len(rows))):
            metric, value = NORMAL_VALUES[i % len(NORMAL_VALUES)]
            rows.append(
                (f"bench-{d:05d}", f"p-{d:05d}", metric, ts, float(value), ts + 500, seqs[d])
            )
        batch += 1
    return rows


def measure(path: Path, rows: list[Row], txn_rows: int, synchronous: str = "FULL") -> float:
    """Insert `rows` into a new database at `path`; returns readings per second."""
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        started = time.perf_counter()
        for i in range(0, len(rows), txn_rows):
            conn.execute("BEGIN")
            conn.executemany(_INSERT, rows[i : i + txn_rows])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        (stored,) = conn.execute("SELECT count(*) FROM readings").fetchone()
    finally:
        conn.close()
    if stored != len(rows):
        raise RuntimeError(f"sqlite baseline stored {stored} of {len(rows)} rows")
    return len(rows) / elapsed
