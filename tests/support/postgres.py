"""A fresh PostgreSQL database per test, on the local server (127.0.0.1:5432, trust auth).

Without a reachable server (or asyncpg) the test skips with the reason; under
`CI=true` it fails instead, since CI machines run the server on loopback.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["SERVER", "fresh_database"]

SERVER = "127.0.0.1:5432"
ROLES = ("postgres", "root")  # the first role the server knows is used


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def _url(role: str, database: str) -> str:
    return f"postgresql+asyncpg://{role}@{SERVER}/{database}"


async def _admin() -> tuple[AsyncEngine, str]:
    """An autocommit engine on the `postgres` database, and its role."""
    if importlib.util.find_spec("asyncpg") is None:  # the driver of every URL here
        _unavailable("asyncpg (the `postgres` extra) is not installed")
    refused: list[str] = []
    for role in ROLES:
        admin = create_async_engine(
            _url(role, "postgres"), isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
        )
        try:
            async with admin.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, TimeoutError) as e:
            await admin.dispose()
            _unavailable(f"no PostgreSQL server reachable at {SERVER}: {e}")
        except DBAPIError as e:
            await admin.dispose()
            refused.append(f"{role}: {e.orig}")
            continue
        return admin, role
    _unavailable(f"PostgreSQL at {SERVER} refuses every role tried: {'; '.join(refused)}")


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new, empty database under a random name, dropped on exit (even with
    connections still open)."""
    admin, role = await _admin()
    name = f"vitals_test_{secrets.token_hex(6)}"
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield _url(role, name)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
