"""The write side of readings: one transaction per group commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.schema import Device, Reading, table_of

__all__ = ["ReadingWriter"]

_devices = table_of(Device)
_insert_readings = insert(table_of(Reading))
_advance_seq = (
    _devices.update()
    .where(_devices.c.id == bindparam("dev"), _devices.c.last_seq < bindparam("seq"))
    .values(last_seq=bindparam("seq"))
)


class ReadingWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def last_seqs(self, device_ids: Iterable[str]) -> dict[str, int]:
        ids = list(device_ids)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(_devices.c.id, _devices.c.last_seq).where(_devices.c.id.in_(ids))
            )
            return {r.id: r.last_seq for r in rows}

    async def commit(self, rows: list[dict[str, Any]], last_seqs: Mapping[str, int]) -> None:
        """Insert `rows` and advance each device's `last_seq`, atomically.

        Core executemany: ORM objects per reading would cost more than the insert.
        """
        async with self._engine.begin() as conn:
            if rows:
                await conn.execute(_insert_readings, rows)
            if last_seqs:
                await conn.execute(
                    _advance_seq, [{"dev": d, "seq": s} for d, s in last_seqs.items()]
                )
