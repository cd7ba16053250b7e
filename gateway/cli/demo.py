"""`vitals demo`: a gateway with demo devices and a clinician, driven by the simulator.

Runs the gateway and the simulator as child processes (as a user would), on a demo
database that is reset each time. It writes a settings file beside that database
(`var/demo.toml`: its URL, host and port), so every `vitals` command given
`--config var/demo.toml` sees the demo, and prints those commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import run
from gateway.cli.serve import CannotListen, probe_listen
from gateway.cli.showcase import banner, provision_users, run_simulator, write_config
from gateway.client.process import ServerFailed, vitals_serve

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("demo", help="run a gateway with simulated patients (resets var/demo.db)")
    p.add_argument("--port", type=int, default=8080, help="the demo gateway's port (8080)")
    p.add_argument("--devices", type=int, default=8, help="simulated wearables")
    p.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    p.add_argument("--scenario", default="deteriorating", help="simulator scenario")
    p.add_argument(
        "--database",
        type=Path,
        default=Path("var/demo.db"),
        help="demo database, reset each run; its settings go beside it (var/demo.toml)",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="gateway settings for the demo's gateway"
    )
    p.set_defaults(func=_start)


def _start(args: argparse.Namespace) -> int:
    try:
        probe_listen("127.0.0.1", args.port)  # before resetting the last demo's data
    except CannotListen as e:
        print(f"vitals demo: {e}", file=sys.stderr)
        return 1
    db: Path = args.database
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()
    db_url = f"sqlite+aiosqlite:///{db.resolve()}"
    config = db.with_suffix(".toml")
    write_config(config, db_url, args.port, command="demo")
    return run(_demo(args, db_url, config))


async def _demo(args: argparse.Namespace, db_url: str, config: Path) -> int:
    tokens = await provision_users(db_url)
    server = vitals_serve(
        "--database-url",
        db_url,
        # The gateway writes to the demo's own stderr: its warnings and errors show
        # between the simulator's lines, while its INFO lines (a connection line per
        # device, an access line per request) would bury the banner.
        "--log-level",
        "WARNING",
        *(["--config", str(args.config)] if args.config else []),
        port=args.port,
    )
    base = server.url
    try:
        try:
            await asyncio.to_thread(server.start)
        except ServerFailed as e:
            raise SystemExit(str(e)) from None
        print(banner("demo", base, tokens, config), flush=True)
        await run_simulator(
            base,
            tokens["admin"],
            devices=args.devices,
            scenario=args.scenario,
            duration=args.duration,
        )
        print(banner("demo", base, tokens, config), flush=True)
        return 0
    finally:
        # As long as it takes: the gateway's own shutdown grace (from --config) bounds it.
        await asyncio.to_thread(server.stop, None)
