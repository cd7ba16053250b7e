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
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import run
from gateway.cli.serve import CannotListen, probe_listen
from gateway.client.process import ServerFailed, vitals_command, vitals_serve

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


async def _provision(url: str) -> dict[str, str]:
    from gateway.storage.accounts import AccountStore, Role
    from gateway.storage.database import open_engine, upgrade_schema

    engine = open_engine(url)
    try:
        await upgrade_schema(engine)
        store = AccountStore(engine)
        return {
            "admin": await store.add_user("demo-admin", Role.ADMIN),
            "clinician": await store.add_user("demo-nurse", Role.CLINICIAN, wards=["icu"]),
        }
    finally:
        await engine.dispose()


def _banner(base: str, tokens: dict[str, str], config: Path) -> str:
    vitals = shlex.quote(str(Path(sys.executable).parent / "vitals"))
    cfg = f"--config {shlex.quote(str(config))}"
    tok = tokens["clinician"]
    return f"""
  vitals-gateway demo: {base}
  clinician token (demo-nurse, ward icu): {tok}

  Watch the ward in a browser: open {base}/ and paste the token.
  A few patients deteriorate within the first minute; acknowledge their alerts there.

  From another terminal ({config} holds the demo's database and address):
    export VITALS_TOKEN={tok}
    {vitals} watch {cfg}           # live alerts; type an alert id + Enter to ack
    {vitals} alerts {cfg}
    {vitals} query {cfg} --patient p-001 --metric heart_rate --since 10m
    {vitals} query {cfg} --patient p-001 --metric spo2 --summary --bucket 1m --since 1h
    {vitals} devices list {cfg}
    curl -H "Authorization: Bearer $VITALS_TOKEN" {base}/v1/patients/p-001/latest
"""


def _write_config(path: Path, db_url: str, port: int) -> None:
    """The demo's settings for the other `vitals` commands: where its data and gateway are."""
    # JSON strings are TOML basic strings for everything a path holds.
    path.write_text(
        "# Written by `vitals demo` (rewritten each run): pass it with --config to see\n"
        "# the demo's data, e.g. `vitals devices list --config var/demo.toml`.\n"
        f'host = "127.0.0.1"\nport = {port}\ndatabase_url = {json.dumps(db_url)}\n'
    )


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
    config.parent.mkdir(parents=True, exist_ok=True)
    _write_config(config, db_url, args.port)
    return run(_demo(args, db_url, config))


async def _demo(args: argparse.Namespace, db_url: str, config: Path) -> int:
    tokens = await _provision(db_url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
        print(_banner(base, tokens, config), flush=True)
        sim = await asyncio.create_subprocess_exec(
            *vitals_command(
                "simulate",
                "--url",
                base,
                f"--admin-token={tokens['admin']}",  # one "=": a value is never an option
                "--devices",
                str(args.devices),
                "--scenario",
                args.scenario,
                "--duration",
                str(args.duration),
            ),
            env=env,
        )
        try:
            await sim.wait()
        finally:
            if sim.returncode is None:
                sim.send_signal(signal.SIGINT)
                await sim.wait()
        print(_banner(base, tokens, config), flush=True)
        return 0
    finally:
        # As long as it takes: the gateway's own shutdown grace (from --config) bounds it.
        await asyncio.to_thread(server.stop, None)
