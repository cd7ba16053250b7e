"""PostgreSQL (and any other backend SQLAlchemy's async engine drives; only PostgreSQL
is tested): a pooled engine that checks a connection before lending it, and every
write through SQLAlchemy Core (`EngineReadingsWriter`, `EngineEventsWriter`); readings
partitioned by day (migration 0003), old days dropped whole (`PostgresRetention`).
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.storage.backend import Writers, nothing_to_close
from gateway.storage.events import EngineEventsWriter
from gateway.storage.readings import EngineReadingsWriter
from gateway.storage.retention import PostgresRetention

__all__ = ["PostgresBackend"]


class PostgresBackend:
    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def where(self) -> str:
        return make_url(self._url).render_as_string(hide_password=True)

    @property
    def shared(self) -> bool:
        return True  # replicas coordinate through it

    def exists(self) -> bool:
        return True  # only the server can tell: see `database.has_schema`

    def open_engine(self) -> AsyncEngine:
        return create_async_engine(self._url, pool_pre_ping=True)

    def open_writers(self, engine: AsyncEngine) -> Writers:
        events = EngineEventsWriter(engine)
        readings = EngineReadingsWriter(engine, events)
        return Writers(readings, events, nothing_to_close, PostgresRetention(engine))
