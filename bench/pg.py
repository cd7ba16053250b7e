"""The local PostgreSQL server as the bench uses it: whether it answers, a database of
its own per run (created, then dropped even with connections open), what a run stored,
which replica owns each patient, and the server's processes for CPU sampling.

The server is the one the tests use: 127.0.0.1:5432, trust auth, role `postgres` (or
`root`). Every call here is synchronous: the driver is.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bench.processes import BenchSkipped

__all__ = ["SERVER", "count_readings", "database", "patient_owners", "server_pids", "settings"]

SERVER = "127.0.0.1:5432"
_ROLES = ("postgres", "root")  # the first role the server knows is used
_CONNECT_TIMEOUT_S = 5

T = TypeVar("T")


def _url(role: str, name: str) -> str:
    return f"postgresql+asyncpg://{role}@{SERVER}/{name}"


async def _admin() -> tuple[AsyncEngine, str]:
    """An autocommit engine on the `postgres` database and its role; BenchSkipped with
    the reason when there is no driver, no server or no role."""
    if importlib.util.find_spec("asyncpg") is None:
        raise BenchSkipped("asyncpg is not installed (pip install -e '.[postgres]')")
    refused: list[str] = []
    for role in _ROLES:
        admin = create_async_engine(
            _url(role, "postgres"),
            isolation_level="AUTOCOMMIT",
            connect_args={"timeout": _CONNECT_TIMEOUT_S},
        )
        try:
            async with admin.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, TimeoutError) as e:
            await admin.dispose()
            raise BenchSkipped(f"no PostgreSQL server at {SERVER}: {e}") from e
        except DBAPIError as e:
            await admin.dispose()
            refused.append(f"{role}: {e.orig}")
            continue
        return admin, role
    raise BenchSkipped(f"PostgreSQL at {SERVER} refuses every role tried: {'; '.join(refused)}")


async def _admin_sql(statement: str) -> str:
    """Run `statement` on the `postgres` database; the role it ran as."""
    admin, role = await _admin()
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()
    return role


@contextlib.contextmanager
def database() -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit (even with connections still
    open); BenchSkipped, before anything is created, when PostgreSQL is not there."""
    name = f"vitals_bench_{secrets.token_hex(6)}"
    role = asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield _url(role, name)
    finally:
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _query(url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def count_readings(url: str, window: tuple[float, float] | None = None) -> int:
    """Readings stored (with `received_us` inside `window`, if given)."""

    async def work(conn: AsyncConnection) -> int:
        if window is None:
            n = await conn.scalar(text("SELECT count(*) FROM readings"))
        else:
            lo, hi = (int(t * 1_000_000) for t in window)
            n = await conn.scalar(
                text("SELECT count(*) FROM readings WHERE received_us BETWEEN :lo AND :hi"),
                {"lo": lo, "hi": hi - 1},
            )
        return int(n or 0)

    return _query(url, work)


def patient_owners(url: str) -> dict[str, str]:
    """Patient id -> the replica that evaluates its alerts (`patient_owners`)."""

    async def work(conn: AsyncConnection) -> dict[str, str]:
        rows = await conn.execute(text("SELECT patient_id, replica_id FROM patient_owners"))
        return {patient: replica for patient, replica in rows}

    return _query(url, work)


def settings(url: str, names: tuple[str, ...]) -> dict[str, str]:
    """The server's settings `names` (`SHOW`), for the record of a run."""

    async def work(conn: AsyncConnection) -> dict[str, str]:
        return {name: str(await conn.scalar(text(f"SHOW {name}"))) for name in names}

    return _query(url, work)


def server_pids() -> list[int]:
    """Every process of the PostgreSQL server on this machine (postmaster, backends,
    WAL writer…): sampled as one role, found again at each sample since backends come
    and go."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            comm = (entry / "comm").read_text().strip()
            if comm == "postgres" or comm.startswith("postgres:"):
                pids.append(int(entry.name))
    return pids
