"""What a database backend provides (`sqlite.py`, `postgres.py`): its engine, the
writers that suit it (retention's deletions among them), and whether a database is
there before anything creates one.

`database.backend_of` picks the backend from the URL; nothing else asks which it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.events import EventsWriter
from gateway.storage.readings import ReadingsWriter
from gateway.storage.retention import ReadingsRetention

__all__ = ["Backend", "Writers", "nothing_to_close"]


@dataclass(frozen=True, slots=True)
class Writers:
    """The write side a backend opens on its engine, and how to close it."""

    readings: ReadingsWriter
    events: EventsWriter
    # Finishes queued writes and lets go of what the writers hold (a thread, say).
    close: Callable[[], Awaitable[None]]
    # Old readings removed: day partitions (PostgreSQL) or batches of rows (SQLite).
    retention: ReadingsRetention


async def nothing_to_close() -> None:
    """`Writers.close` of writers on the engine: its pool is the engine's to dispose of."""


class Backend(Protocol):
    @property
    def where(self) -> str:
        """The database, as an operator would name it (no password)."""
        ...

    def exists(self) -> bool:
        """False when opening the database would create it (an SQLite file that is not
        there); True when it is there or only the server can tell."""
        ...

    @property
    def shared(self) -> bool:
        """Whether several gateway processes (replicas) may share the database."""
        ...

    def open_engine(self) -> AsyncEngine: ...

    def open_writers(self, engine: AsyncEngine) -> Writers:
        """The readings, events and retention writers on `engine`'s database."""
        ...
