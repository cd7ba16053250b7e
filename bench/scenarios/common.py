"""What every scenario needs: a provisioned temp database, a real `vitals serve` (or
the baseline server), a fleet of load generator workers driven through one schedule,
CPU sampling over the measurement window, and an optional py-spy profile."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import insert

from bench.config import BenchConfig
from bench.loadgen import WorkerResult, WorkerSpec
from bench.processes import BenchError, CpuSample, PidSource, Worker, sample_cpu
from gateway.client.process import ServerFailed, ServerProcess, free_port, vitals_serve
from gateway.storage.accounts import AccountStore, Role, hash_token, new_token
from gateway.storage.database import open_engine, upgrade_schema
from gateway.storage.schema import Device

__all__ = [
    "BENCH_RULES",
    "Fleet",
    "Profiler",
    "Provisioned",
    "RunResult",
    "baseline_server",
    "count_readings",
    "cpu_figures",
    "gateway",
    "measure_window",
    "merge_counts",
    "provision",
    "share",
    "stop_notes",
    "summarise_collapsed",
    "worker_spec",
]

T = TypeVar("T")

# for_s = 0: an alert is raised by the very batch that violates, so alert latency is
# the gateway's, not the rule's. The heart rate limit is the one the ward load crosses.
# NEWS2 is scored on every patient's path whatever the rules; the news2-high rule adds
# its evaluation (the ward load never reaches high: its one bad heart rate scores 3).
BENCH_RULES = """\
[[rule]]
name = "heart_rate-high"
metric = "heart_rate"
above = 130
for_s = 0
clear_margin = 5
priority = "high"

[[rule]]
name = "spo2-low"
metric = "spo2"
below = 92
for_s = 0
clear_margin = 1
priority = "high"

[[rule]]
name = "news2-high"
kind = "news2"
band_at_least = "high"
priority = "high"
"""


@dataclass
class RunResult:
    """One repetition of one scenario: figures (aggregated across repetitions),
    details (kept per repetition), notes (anything a reader must know)."""

    figures: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Provisioned:
    devices: list[list[str]]  # [device id, patient id, token]
    dashboard_token: str  # an admin's: sees every ward, so every alert reaches every dashboard
    db_path: Path

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db_path}"


def share(items: Sequence[T], parts: int) -> list[list[T]]:
    """`items` dealt round-robin into `parts` lists (some may be empty)."""
    return [list(items[i::parts]) for i in range(parts)]


def merge_counts(counts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total)


# -- database and servers ------------------------------------------------------------


async def provision(database_url: str, devices: int) -> tuple[list[list[str]], str]:
    """The schema, devices, and the user the dashboards log in as, straight into the
    database at `database_url`: setup, not measured. Returns the devices' [device id,
    patient id, token] and the dashboards' token."""
    engine = open_engine(database_url)
    try:
        await upgrade_schema(engine)
        now = datetime.now(UTC)
        creds, rows = [], []
        for i in range(devices):
            token = new_token()
            device_id, patient_id = f"bench-{i:05d}", f"p-{i:05d}"
            creds.append([device_id, patient_id, token])
            rows.append(
                {
                    "id": device_id,
                    "patient_id": patient_id,
                    "ward": f"ward-{i % 20:02d}",
                    "token_hash": hash_token(token),
                    "created_at": now,
                    "revoked_at": None,
                    "last_seq": 0,
                }
            )
        async with engine.begin() as conn:
            if rows:
                await conn.execute(insert(Device), rows)
        # Dashboards see the alerts of their user's wards; an admin sees every ward, so
        # the figure is "every dashboard has every alert" whatever the ward assignment.
        dashboards = await AccountStore(engine).add_user("bench-dashboards", Role.ADMIN)
    finally:
        await engine.dispose()
    return creds, dashboards


async def _provision(db_path: Path, devices: int) -> Provisioned:
    creds, dashboards = await provision(f"sqlite+aiosqlite:///{db_path}", devices)
    return Provisioned(creds, dashboards, db_path)


@contextlib.contextmanager
def gateway(
    cfg: BenchConfig, workdir: Path, devices: int, *, rules: bool = False
) -> Iterator[tuple[ServerProcess, Provisioned]]:
    """A provisioned temp database and `vitals serve` on it, stopped on exit: SIGTERM
    (graceful), SIGKILL if it has not stopped in time (`server.killed`: nothing acked is
    lost either way, acks follow commits)."""
    workdir.mkdir(parents=True, exist_ok=True)
    prov = asyncio.run(_provision(workdir / "vitals.db", devices))
    options = [
        "--database-url", prov.database_url,
        "--log-level", "WARNING",  # INFO logs every connect: setup noise, not ingest
    ]  # fmt: skip
    if rules:
        rules_path = workdir / "bench-rules.toml"
        rules_path.write_text(BENCH_RULES)
        options += ["--rules", str(rules_path)]
    server = vitals_serve(*options, log_dir=workdir, own_session=True)
    try:
        _start(server)
        yield server, prov
    finally:
        server.stop(grace=cfg.grace_s + 30)


def _start(server: ServerProcess) -> None:
    try:
        server.start(timeout=30)
    except ServerFailed as e:
        raise BenchError(str(e)) from e


def stop_notes(server: ServerProcess) -> list[str]:
    if server.killed:
        return ["the gateway did not shut down gracefully in time and was killed"]
    if server.proc is not None and server.proc.returncode not in (0, None):
        return [f"the gateway exited with status {server.proc.returncode}"]
    return []


@contextlib.contextmanager
def baseline_server(workdir: Path) -> Iterator[ServerProcess]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "bench.baseline_server", "--port", str(port)]
    server = ServerProcess(argv, port=port, name="baseline", log_dir=workdir, own_session=True)
    try:
        _start(server)
        yield server
    finally:
        server.stop(grace=15)


def count_readings(db_path: Path, window: tuple[float, float] | None = None) -> int:
    """Readings in the database (with `received_us` inside `window`, if given); read
    after the gateway stopped."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        if window is None:
            (n,) = conn.execute("SELECT count(*) FROM readings").fetchone()
        else:
            lo, hi = (int(t * 1_000_000) for t in window)
            (n,) = conn.execute(
                "SELECT count(*) FROM readings WHERE received_us >= ? AND received_us < ?",
                (lo, hi),
            ).fetchone()
    finally:
        conn.close()
    return int(n)


# -- workers -------------------------------------------------------------------------


def worker_spec(
    cfg: BenchConfig,
    workdir: Path,
    name: str,
    server: ServerProcess,
    *,
    mode: str,
    devices: list[list[str]] | None = None,
    dashboards: list[str] | None = None,
    batch_size: int = 10,
    warmup_s: float = 0.0,
    duration_s: float = 0.0,
    rate_hz: float = 1.0,
    raises_per_round: int = 0,
    hold_s: float = 0.0,
    dashboard_server: ServerProcess | None = None,
) -> WorkerSpec:
    """`server` takes the devices, `dashboard_server` (default: the same) the dashboards."""
    devices = devices or []
    dashboards = dashboards or []
    connect_allowance = 60 + (len(devices) + len(dashboards)) / 20  # >= 20 handshakes/s
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "dashboard_port": (dashboard_server or server).port,
        "devices": devices,
        "dashboards": dashboards,
        "mode": mode,  # type: ignore[typeddict-item]  # checked by the callers' literals
        "batch_size": batch_size,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "rate_hz": rate_hz,
        "raises_per_round": raises_per_round,
        "grace_s": cfg.grace_s,
        "connect_concurrency": cfg.connect_concurrency,
        "lifetime_s": connect_allowance + warmup_s + duration_s + cfg.grace_s + hold_s + 60,
        "result_path": str(workdir / f"{name}.result.json"),
    }


class Fleet:
    """Load generator workers started together and driven through one schedule."""

    def __init__(self, specs: Sequence[WorkerSpec], workdir: Path, prefix: str) -> None:
        self.workers: list[Worker] = []
        try:
            for i, spec in enumerate(specs):
                self.workers.append(Worker(spec, workdir, f"{prefix}-{i}"))
        except BaseException:
            self.kill()
            raise

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def ready(self) -> list[dict[str, Any]]:
        """Wait until every worker has connected; their `ready` messages."""
        budget = max(w.spec["lifetime_s"] for w in self.workers)
        deadline = time.monotonic() + budget
        return [w.expect("ready", deadline) for w in self.workers]

    def go(self, t0: float) -> None:
        for w in self.workers:
            w.command(cmd="go", t0=t0)

    def stop(self) -> None:
        for w in self.workers:
            w.command(cmd="stop")

    def results(self, timeout: float) -> list[WorkerResult]:
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.expect("done", deadline)
        return [w.result() for w in self.workers]

    def kill(self) -> None:
        for w in self.workers:
            w.kill()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def measure_window(
    server_pid: int | Sequence[int],
    fleet: Fleet,
    t0: float,
    warmup_s: float,
    duration_s: float,
    *,
    more: Mapping[str, PidSource] | None = None,
) -> dict[str, float]:
    """Sleep through the warm-up, then sample CPU over the measurement window: the
    server (one process, or the replicas together), the load generators, and `more`
    roles (PostgreSQL, HAProxy), which would otherwise count as other processes."""
    servers = [server_pid] if isinstance(server_pid, int) else list(server_pid)
    roles: dict[str, PidSource] = {"server": servers, "loadgen": fleet.pids, **(more or {})}
    time.sleep(max(0.0, t0 + warmup_s - time.time()))
    start: CpuSample = sample_cpu(roles)
    time.sleep(max(0.0, t0 + warmup_s + duration_s - time.time()))
    return sample_cpu(roles).cores_since(start)


def cpu_figures(cores: dict[str, float]) -> dict[str, float | None]:
    """Cores per role; the load generators' share is of server and load generators."""
    total = cores["server"] + cores["loadgen"]
    return {
        "server_cpu_cores": cores["server"],
        "loadgen_cpu_cores": cores["loadgen"],
        "loadgen_cpu_share": cores["loadgen"] / total if total else None,
        **{
            f"{role}_cpu_cores": v
            for role, v in cores.items()
            if role not in ("server", "loadgen", "other")
        },
        "other_cpu_cores": cores["other"],
    }


# -- profiling -----------------------------------------------------------------------


class Profiler:
    """py-spy on the gateway over the window (`--profile`), summarised by function.

    `--gil`: only the thread holding the GIL is sampled, so the figures say where the
    interpreter's one core goes (SQLite's C code in the writer thread runs without it).
    """

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if exe is None:
            return
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
             "--rate", "200", "--nonblocking", "--gil", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    @property
    def available(self) -> bool:
        return self.proc is not None

    def summary(self, top: int = 15) -> dict[str, list[tuple[str, float]]]:
        """Top functions by own samples and by samples anywhere on the stack (%)."""
        if self.proc is None:
            return {}
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return {}
        if not self.out.exists():
            return {}
        return summarise_collapsed(self.out.read_text().splitlines(), top)


def _function(frame: str) -> str:
    """Drop the line number: "f (a/b.py:42)" -> "f (a/b.py)"."""
    return frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") and ":" in frame else frame


# Inclusive time is listed for the project's own code only, without the entry points
# that every sample passes through.
_OURS = ("gateway/", "schemas/")
_ENTRY = ("gateway/cli/", "gateway/__main__.py")


def _ours(function: str) -> bool:
    where = function.rpartition("(")[2]
    return where.startswith(_OURS) and not where.startswith(_ENTRY)


def summarise_collapsed(lines: Sequence[str], top: int) -> dict[str, list[tuple[str, float]]]:
    """Collapsed stacks ("f (x.py:1);g (y.py:2) 12") -> top functions by own samples,
    and the project's functions by inclusive samples (% of all samples)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        # Inclusive time only for the project's own functions: where in our code it goes.
        for name in {f for f in frames if _ours(f)}:
            inclusive[name] += count
    if not total:
        return {}
    return {
        "own": [(name, 100 * n / total) for name, n in own.most_common(top)],
        "inclusive": [(name, 100 * n / total) for name, n in inclusive.most_common(top)],
    }
