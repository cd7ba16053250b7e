"""`vitals demo`: a gateway with demo devices and a clinician, driven by the simulator.

Runs the gateway and the simulator as child processes (as a user would), on a demo
database that is reset each time, and prints the commands to look at what is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cli.common import run

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("demo", help="run a gateway with simulated patients (resets var/demo.db)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--devices", type=int, default=8, help="simulated wearables")
    p.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    p.add_argument("--scenario", default="deteriorating", help="simulator scenario")
    p.add_argument("--database", type=Path, default=Path("var/demo.db"))
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="gateway settings for the demo's gateway"
    )
    p.set_defaults(func=_start)


async def _provision(url: str) -> dict[str, str]:
    from gateway.storage.accounts import AccountStore, Role
    from gateway.storage.database import create_schema, open_engine

    engine = open_engine(url)
    try:
        await create_schema(engine)
        store = AccountStore(engine)
        return {
            "admin": await store.add_user("demo-admin", Role.ADMIN),
            "clinician": await store.add_user("demo-nurse", Role.CLINICIAN, wards=["icu"]),
        }
    finally:
        await engine.dispose()


async def _wait_ready(base: str, proc: asyncio.subprocess.Process, within: float = 20) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise SystemExit(f"the gateway exited with code {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"the gateway did not become ready at {base} within {within:.0f} s")


def _banner(base: str, tokens: dict[str, str]) -> str:
    vitals = shlex.quote(str(Path(sys.executable).parent / "vitals"))
    tok = tokens["clinician"]
    return f"""
  vitals-gateway demo: {base}
  clinician token (demo-nurse, ward icu): {tok}

  Watch the ward in a browser: open {base}/ and paste the token.
  A few patients deteriorate within the first minute; acknowledge their alerts there.

  From another terminal:
    export VITALS_TOKEN={tok}
    {vitals} watch --url {base}           # live alerts; type an alert id + Enter to ack
    {vitals} query --url {base} --patient p-001 --metric heart_rate --since 10m
    {vitals} query --url {base} --patient p-001 --metric spo2 --summary --bucket 1m --since 1h
    curl -H "Authorization: Bearer $VITALS_TOKEN" {base}/v1/patients/p-001/latest
"""


def _start(args: argparse.Namespace) -> int:
    db: Path = args.database
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()
    return run(_demo(args, f"sqlite+aiosqlite:///{db.resolve()}"))


async def _demo(args: argparse.Namespace, db_url: str) -> int:
    tokens = await _provision(db_url)
    base = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    me = [sys.executable, "-m", "gateway"]

    server = await asyncio.create_subprocess_exec(
        *me,
        "serve",
        "--database-url",
        db_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        # The gateway writes to the demo's own stderr: its warnings and errors show
        # between the simulator's lines, while its INFO lines (a connection line per
        # device, an access line per request) would bury the banner.
        "--log-level",
        "WARNING",
        *(["--config", str(args.config)] if args.config else []),
        env=env,
    )
    try:
        await _wait_ready(base, server)
        print(_banner(base, tokens), flush=True)
        sim = await asyncio.create_subprocess_exec(
            *me,
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
            env=env,
        )
        try:
            await sim.wait()
        finally:
            if sim.returncode is None:
                sim.send_signal(signal.SIGINT)
                await sim.wait()
        print(_banner(base, tokens), flush=True)
        return 0
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()
