"""`vitals cluster`: the demo on several replicas sharing one PostgreSQL database behind
HAProxy (`deploy/haproxy.cfg`), all on this machine.

The database (`vitals_cluster` on the local server unless `--database-url`) is dropped
and created again each run, as `vitals demo` resets `var/demo.db`. The replicas' and
HAProxy's logs and the rendered HAProxy configuration go to `var/cluster/`, the
settings the other commands read to `var/cluster.toml`. What is missing (HAProxy,
PostgreSQL, its driver) is said in one line with how to get it, and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import run
from gateway.cli.serve import CannotListen, probe_listen
from gateway.cli.showcase import banner, provision_users, run_simulator, write_config
from gateway.client.cluster import HAPROXY, Cluster
from gateway.client.process import ServerFailed

__all__ = ["DEFAULT_DATABASE_URL", "register"]

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/vitals_cluster"
_CONNECT_TIMEOUT_S = 5


class Unavailable(Exception):
    """Something the cluster needs is missing; the message says what and how to get it."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "cluster",
        help="run the demo on replicas behind HAProxy, on PostgreSQL (resets its database)",
    )
    p.add_argument("--port", type=int, default=8080, help="HAProxy's port (8080)")
    p.add_argument("--replicas", type=int, default=2, help="gateway replicas (2)")
    p.add_argument("--devices", type=int, default=8, help="simulated wearables")
    p.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    p.add_argument("--scenario", default="deteriorating", help="simulator scenario")
    p.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        metavar="URL",
        help="PostgreSQL database of the cluster, DROPPED and created again each run "
        f"({DEFAULT_DATABASE_URL})",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("var/cluster"),
        help="logs and haproxy.cfg; the settings file goes beside it (var/cluster.toml)",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="gateway settings for every replica")
    p.set_defaults(func=_start)


def _start(args: argparse.Namespace) -> int:
    try:
        if args.replicas < 1:
            raise Unavailable(f"--replicas must be at least 1, not {args.replicas}")
        if shutil.which(HAPROXY) is None:
            raise Unavailable("haproxy is not installed; install it with: apt-get install haproxy")
        probe_listen("127.0.0.1", args.port)  # before resetting the last run's data
        run(_reset_database(args.database_url))
    except (Unavailable, CannotListen) as e:
        print(f"vitals cluster: {e}", file=sys.stderr)
        return 1
    config = args.run_dir.with_suffix(".toml")
    write_config(config, args.database_url, args.port, command="cluster")
    return run(_cluster(args, config))


async def _reset_database(url: str) -> None:
    """Drop and create the database of `url` through the server's `postgres` database;
    Unavailable when the URL is no PostgreSQL one, its driver is missing or the
    server does not answer or refuses."""
    # Imported here: every `vitals` command builds this parser; only this needs them.
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError
    from sqlalchemy.ext.asyncio import create_async_engine

    from gateway.storage.database import backend_of
    from gateway.storage.postgres import PostgresBackend

    parsed = make_url(url)
    if not isinstance(backend_of(url), PostgresBackend) or not parsed.database:
        raise Unavailable(
            f"--database-url {parsed.render_as_string(hide_password=True)}: replicas share "
            "one PostgreSQL database (postgresql+asyncpg://user@host/dbname)"
        )
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    try:
        admin = create_async_engine(
            parsed.set(database="postgres"),
            isolation_level="AUTOCOMMIT",
            connect_args={"timeout": _CONNECT_TIMEOUT_S},
        )
    except (ImportError, NoSuchModuleError):
        raise Unavailable(
            "the PostgreSQL driver asyncpg is not installed; install it with: "
            "pip install 'vitals-gateway[postgres]' (make cluster does)"
        ) from None
    name = parsed.database.replace('"', '""')
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError) as e:
        raise Unavailable(
            f"no PostgreSQL server answers at {where} ({e}); install one with: "
            "apt-get install postgresql, or pass --database-url"
        ) from None
    except DBAPIError as e:
        reason = str(e.orig).splitlines()[0] if e.orig else str(e)
        raise Unavailable(f"PostgreSQL at {where} refused: {reason}; pass --database-url") from None
    finally:
        await admin.dispose()


async def _cluster(args: argparse.Namespace, config: Path) -> int:
    tokens = await provision_users(args.database_url)
    cluster = Cluster(
        args.database_url,
        args.run_dir,
        replicas=args.replicas,
        port=args.port,
        options=["--config", str(args.config)] if args.config else [],
    )
    replicas = ", ".join(f"{r.name} {r.url}" for r in cluster.replicas)
    extra = (
        f"  HAProxy ({cluster.haproxy_config}) in front of {replicas}\n"
        f"  their logs: {args.run_dir}/*.log; HAProxy's stats: "
        f"http://127.0.0.1:{cluster.stats_port}/stats\n"
    )
    base = cluster.url
    try:
        try:
            await asyncio.to_thread(cluster.start)
        except ServerFailed as e:
            raise SystemExit(f"vitals cluster: {e}") from None
        print(banner("cluster", base, tokens, config, extra=extra), flush=True)
        await run_simulator(
            base,
            tokens["admin"],
            devices=args.devices,
            scenario=args.scenario,
            duration=args.duration,
        )
        print(banner("cluster", base, tokens, config, extra=extra), flush=True)
        return 0
    finally:
        await asyncio.to_thread(cluster.stop)
