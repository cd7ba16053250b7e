"""What `vitals demo` and `vitals cluster` share: the demo users, the settings file the
other commands read, the banner, and the simulator run against the gateway.

Not a subcommand: the two commands differ only in what serves (one gateway on SQLite,
or replicas on PostgreSQL behind HAProxy), so a user sees the same thing from both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from pathlib import Path

from gateway.client.process import vitals_command

__all__ = ["Tokens", "banner", "provision_users", "run_simulator", "write_config"]

Tokens = dict[str, str]  # "admin", "clinician" -> token


async def provision_users(url: str) -> Tokens:
    """The demo's admin and clinician (ward icu) on the database at `url`, migrated to
    the head first; their tokens."""
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


def banner(what: str, base: str, tokens: Tokens, config: Path, *, extra: str = "") -> str:
    """What to look at and how: `what` is "demo" or "cluster"; `extra` lines follow the
    first."""
    vitals = shlex.quote(str(Path(sys.executable).parent / "vitals"))
    cfg = f"--config {shlex.quote(str(config))}"
    tok = tokens["clinician"]
    return f"""
  vitals-gateway {what}: {base}
{extra}  clinician token (demo-nurse, ward icu): {tok}

  Watch the ward in a browser: open {base}/ and paste the token.
  A few patients deteriorate within the first minute; acknowledge their alerts there.

  From another terminal ({config} holds the {what}'s database and address):
    export VITALS_TOKEN={tok}
    {vitals} watch {cfg}           # live alerts; type an alert id + Enter to ack
    {vitals} alerts {cfg}
    {vitals} query {cfg} --patient p-001 --metric heart_rate --since 10m
    {vitals} query {cfg} --patient p-001 --metric spo2 --summary --bucket 1m --since 1h
    {vitals} devices list {cfg}
    curl -H "Authorization: Bearer $VITALS_TOKEN" {base}/v1/patients/p-001/latest
"""


def write_config(path: Path, db_url: str, port: int, *, command: str) -> None:
    """Settings for the other `vitals` commands: where the data and the gateway are
    (`command` wrote them, and rewrites them each run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON strings are TOML basic strings for everything a path or URL holds.
    path.write_text(
        f"# Written by `vitals {command}` (rewritten each run): pass it with --config to\n"
        f"# see its data, e.g. `vitals devices list --config {path}`.\n"
        f'host = "127.0.0.1"\nport = {port}\ndatabase_url = {json.dumps(db_url)}\n'
    )


async def run_simulator(
    base: str, admin_token: str, *, devices: int, scenario: str, duration: float
) -> int:
    """`vitals simulate` against `base` (devices provisioned with `admin_token`) until
    `duration` s pass (0: until Ctrl-C); its exit code. Its live table goes to our
    terminal; when we are cancelled it gets SIGINT and is waited for."""
    sim = await asyncio.create_subprocess_exec(
        *vitals_command(
            "simulate",
            "--url",
            base,
            f"--admin-token={admin_token}",  # one "=": a value is never an option
            "--devices",
            str(devices),
            "--scenario",
            scenario,
            "--duration",
            str(duration),
        ),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        return await sim.wait()
    finally:
        if sim.returncode is None:
            sim.send_signal(signal.SIGINT)
            await sim.wait()
