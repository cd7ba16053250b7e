"""`python -m bench` (`make bench`): run the scenarios, print the table, write the JSON.

Each scenario repetition starts its own processes (gateway or baseline server, load
generator workers) in a fresh temp folder and stops them all before the next one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.config import FULL, QUICK, SCENARIOS, BenchConfig
from bench.limits import raise_nofile
from bench.processes import BenchError, BenchSkipped
from bench.report import build_results, machine_info, render, write_results
from bench.scenarios import GROUPS, TITLES, RunResult
from gateway.errors import ConfigError
from gateway.settings import load_settings

__all__ = ["main", "parse_args"]


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SCENARIOS)}")
    return names


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the gateway on loopback against baselines.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repetition: a smoke run")
    p.add_argument(
        "--only", type=_scenarios, metavar="LIST",
        help=f"comma-separated scenarios to run ({', '.join(SCENARIOS)})",
    )  # fmt: skip
    p.add_argument("--devices", type=int, help="devices in sustained ingest (default 2000)")
    p.add_argument("--duration", type=float, help="measurement window, s (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up before the window, s (default 3)")
    p.add_argument(
        "--repeat", type=int,
        help="repetitions per scenario (default 3; postgres: 1)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, help="load generator processes (default 2)")
    p.add_argument("--ward-devices", type=int, help="devices in the ward load (default 5000)")
    p.add_argument("--ward-dashboards", type=int, help="dashboards in the ward load (default 50)")
    p.add_argument("--connections", type=int, help="idle connections in capacity (default 10000)")
    p.add_argument("--fanout-dashboards", type=int, help="dashboards for fan-out (default 1000)")
    p.add_argument(
        "--fhir-readings", type=int, help="readings the FHIR export scenario exports (1000000)"
    )
    p.add_argument("--tmpdir", type=Path, help="where temp databases go (default: system temp)")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway in the first run")
    p.add_argument("--output", type=Path, help="results JSON (default bench/results/latest.json)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs, databases)")
    args = p.parse_args(argv)

    base = QUICK if args.quick else FULL
    changes: dict[str, Any] = {
        "scenarios": args.only,
        "devices": args.devices,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "postgres_repeat": args.repeat,
        "fhir_repeat": args.repeat,
        "fhir_readings": args.fhir_readings,
        "workers": args.workers,
        "ward_devices": args.ward_devices,
        "ward_dashboards": args.ward_dashboards,
        "idle_connections": args.connections,
        "fanout_dashboards": args.fanout_dashboards,
        "tmpdir": args.tmpdir,
        "output": args.output,
    }
    cfg = base.replace(**{k: v for k, v in changes.items() if v is not None})
    cfg = cfg.replace(profile=args.profile, keep=args.keep)
    for name in ("repeat", "workers", "devices", "ward_devices"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.duration_s <= 0 or cfg.warmup_s < 0:
        p.error("--duration must be positive and --warmup not negative")
    return cfg


def _gateway_settings(workdir: Path) -> dict[str, Any]:
    """The gateway's effective settings as the bench starts it (flags > env > files)."""
    try:
        settings = load_settings(
            database_url=f"sqlite+aiosqlite:///{workdir / 'vitals.db'}", log_level="WARNING"
        )
    except ConfigError as e:  # the figures stand; say why the settings are missing
        return {"error": str(e)}
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["rules_file"] = "shipped rules (ingest); bench rules, for_s = 0 (ward, capacity)"
    return data


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # Piped (make, CI logs): wide enough for the table; a terminal keeps its width.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    nofile = raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="vitals-bench-", dir=cfg.tmpdir))
    started = datetime.now(UTC)
    repeats = ", ".join(f"{g} x{cfg.repeats(g)}" for g in cfg.scenarios)
    console.print(f"bench: {repeats}; open-files limit {nofile}; work dir {workdir}")
    runs: dict[str, list[RunResult | None]] = {}
    skipped: dict[str, str] = {}
    try:
        for group in cfg.scenarios:
            repeat = cfg.repeats(group)
            for rep in range(repeat):
                for name, run in GROUPS[group]:
                    if name in skipped:
                        continue
                    console.print(f"  {name} {rep + 1}/{repeat} …", end="")
                    clock = time.monotonic()
                    try:
                        result: RunResult | None = run(cfg, workdir / f"{name}-{rep + 1}", rep)
                    except BenchSkipped as e:
                        console.print(f" [yellow]skipped[/]: {e}")
                        skipped[name] = str(e)
                        continue
                    except BenchError as e:
                        console.print(f" [red]failed[/]: {e}")
                        result = None
                    else:
                        console.print(f" {time.monotonic() - clock:.0f} s")
                    runs.setdefault(name, []).append(result)
        doc = build_results(
            config=cfg.as_dict(),
            machine=machine_info(workdir),
            gateway_settings=_gateway_settings(workdir),
            runs=runs,
            skipped=skipped,
            titles=TITLES,
            started_at=started.isoformat(timespec="seconds"),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    finally:
        if cfg.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    write_results(doc, cfg.output)
    render(doc, console)
    console.print(f"results: {cfg.output}")
    return 1 if any(r is None for reps in runs.values() for r in reps) else 0


if __name__ == "__main__":
    sys.exit(main())
