"""What one bench run does: scenarios, sizes, durations. Built from the flags by
`bench.__main__`; `--quick` swaps in small sizes for a smoke run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FULL",
    "QUICK",
    "SCENARIOS",
    "TARGET_ALERT_OTHER_P99_MS",
    "TARGET_ALERT_SAME_P99_MS",
    "TARGET_CLUSTER_SHARE",
    "TARGET_INGEST_PER_S",
    "TARGET_PG_INGEST_PER_S",
    "TARGET_REACK_P99_S",
    "BenchConfig",
]

# The target for sustained durable ingest, readings/s.
TARGET_INGEST_PER_S = 50_000

# Scenario groups of `--only`, in the order they run.
SCENARIOS = ("baseline", "ingest", "ward", "capacity", "postgres", "fhir")

# The targets for replicas on PostgreSQL (bench/scenarios/postgres.py).
TARGET_PG_INGEST_PER_S = 40_000  # one replica, durable readings/s
TARGET_CLUSTER_SHARE = 0.9  # two replicas through HAProxy, of one replica's readings/s
TARGET_ALERT_SAME_P99_MS = 50.0  # dashboards on the replica that raised the alert
TARGET_ALERT_OTHER_P99_MS = 100.0  # dashboards on the other replica
TARGET_REACK_P99_S = 6.0  # from a replica's SIGKILL to a device's next ack


@dataclass(frozen=True, slots=True)
class BenchConfig:
    scenarios: tuple[str, ...] = SCENARIOS
    quick: bool = False
    repeat: int = 3
    workers: int = 2  # load generator processes
    warmup_s: float = 3.0
    duration_s: float = 10.0
    # Sustained ingest (and baseline a): closed loop, one batch in flight per device.
    devices: int = 2000
    batch_size: int = 10
    # Ward: paced devices, each one batch per second, and subscribed dashboards.
    ward_devices: int = 5000
    ward_batch_size: int = 6
    ward_dashboards: int = 50
    min_alerts: int = 500
    # Capacity: idle device connections, then one alert fanned out to dashboards.
    idle_connections: int = 10_000
    fanout_dashboards: int = 1000
    fanout_alerts: int = 5
    # PostgreSQL (one replica, two behind HAProxy): the ingest and ward loads above,
    # each on a database of its own; fewer repetitions, to keep the group near 2 min.
    postgres_repeat: int = 1
    # FHIR Bulk Data export (bench/scenarios/fhir.py): readings in the database it
    # exports, under the ward load above; once, as each run fills its own database.
    fhir_readings: int = 1_000_000
    fhir_repeat: int = 1
    # Failover: devices streaming through HAProxy when a replica is SIGKILLed.
    failover_devices: int = 200
    failover_rate_hz: float = 1.0
    failover_steady_s: float = 3.0  # streaming before the kill
    failover_wait_s: float = 20.0  # at most, for every device's first ack after it
    # Baseline b: rows inserted with plain sqlite3. None: as many as an ingest run at
    # the target rate stores (warm-up + window), since SQLite's cost per row grows
    # with the size of the indexes it inserts into.
    sqlite_rows: int | None = None
    sqlite_txn_rows: int = 1000
    grace_s: float = 5.0
    connect_concurrency: int = 64  # handshakes in flight per worker
    tmpdir: Path | None = None
    profile: bool = False
    keep: bool = False  # keep the temp folder: logs, databases, worker results
    output: Path = Path("bench/results/latest.json")

    @property
    def baseline_rows(self) -> int:
        if self.sqlite_rows is not None:
            return self.sqlite_rows
        return round((self.warmup_s + self.duration_s) * TARGET_INGEST_PER_S)

    def repeats(self, group: str) -> int:
        """Repetitions of each run of scenario group `group`."""
        if group == "fhir":
            return self.fhir_repeat
        return self.postgres_repeat if group == "postgres" else self.repeat

    def replace(self, **changes: Any) -> BenchConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: str(v) if isinstance(v, Path) else v
            for f in dataclasses.fields(self)
            if (v := getattr(self, f.name)) is not None
        }


FULL = BenchConfig()
# Small and short: proves the harness end to end in about a minute; not figures.
QUICK = BenchConfig(
    quick=True,
    repeat=1,
    warmup_s=1.0,
    duration_s=3.0,
    devices=200,
    ward_devices=500,
    ward_dashboards=10,
    min_alerts=50,
    idle_connections=1000,
    fanout_dashboards=100,
    fanout_alerts=3,
    failover_devices=50,
    fhir_readings=100_000,
    failover_steady_s=2.0,
    failover_wait_s=15.0,
    grace_s=3.0,
)
