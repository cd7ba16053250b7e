"""Patients' own settings (`patient_settings`): read one, read all (at start), replace one.

A replacement deletes and inserts in one transaction (the same SQL on both databases)
and, on PostgreSQL, sends `pg_notify(CHANNEL_SETTINGS, patient id)` in it, so other
replicas hear of it when, and only if, it is committed. Overrides are stored as JSON
by rule name, spelled as the API spells them (null fields left out).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.core.news2 import SpO2Scale
from gateway.core.patient_rules import Override, PatientSettings
from gateway.errors import StorageUnavailable
from gateway.storage.notify import CHANNEL_SETTINGS, notify_sql
from gateway.storage.schema import PatientSettingsRow, table_of

__all__ = ["PatientSettingsStore", "StoredSettings", "overrides_json"]

_t = table_of(PatientSettingsRow)
# What an Override holds when nothing is set: left out of the stored JSON.
_UNSET: dict[str, Any] = {"disabled": False, "reason": ""}


@dataclass(frozen=True, slots=True)
class StoredSettings:
    """A patient's settings as stored, with who set them last and when."""

    patient_id: str
    settings: PatientSettings
    updated_at: datetime
    updated_by: str


def overrides_json(overrides: Mapping[str, Override]) -> str:
    """The stored spelling: by rule name, each with only the fields it sets."""
    out = {}
    for name, o in sorted(overrides.items()):
        out[name] = {
            k: v for k, v in asdict(o).items() if v is not None and _UNSET.get(k, object()) != v
        }
    return json.dumps(out, separators=(",", ":"), sort_keys=True)


def _overrides(text: str) -> dict[str, Override]:
    return {name: Override(**fields) for name, fields in json.loads(text).items()}


def _stored(row: Any) -> StoredSettings:
    return StoredSettings(
        patient_id=row.patient_id,
        settings=PatientSettings(
            spo2_scale=cast(SpO2Scale, int(row.spo2_scale)),
            overrides=_overrides(row.overrides),
        ),
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


class PatientSettingsStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _connect(self, write: bool) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() if write else self._engine.connect() as conn:
                yield conn
        except (OSError, DBAPIError) as e:
            raise StorageUnavailable(f"cannot reach patients' settings: {e}") from e

    async def get(self, patient_id: str) -> StoredSettings | None:
        """The patient's settings; None if never set."""
        async with self._connect(write=False) as conn:
            row = (await conn.execute(select(_t).where(_t.c.patient_id == patient_id))).first()
        return None if row is None else _stored(row)

    async def every(self, patient_ids: Collection[str] | None = None) -> list[StoredSettings]:
        """Every patient's settings that were ever set (of `patient_ids` only, if given),
        by patient id."""
        query = select(_t).order_by(_t.c.patient_id)
        if patient_ids is not None:
            if not patient_ids:
                return []
            query = query.where(_t.c.patient_id.in_(sorted(patient_ids)))
        async with self._connect(write=False) as conn:
            rows = (await conn.execute(query)).all()
        return [_stored(r) for r in rows]

    async def put(
        self, patient_id: str, settings: PatientSettings, by: str, at: datetime
    ) -> StoredSettings:
        """Replace the patient's settings (and wake the other replicas)."""
        async with self._connect(write=True) as conn:
            await conn.execute(delete(_t).where(_t.c.patient_id == patient_id))
            await conn.execute(
                insert(_t),
                {
                    "patient_id": patient_id,
                    "spo2_scale": settings.spo2_scale,
                    "overrides": overrides_json(settings.overrides),
                    "updated_at": at,
                    "updated_by": by,
                },
            )
            if conn.dialect.name == "postgresql":
                await conn.execute(notify_sql, {"channel": CHANNEL_SETTINGS, "payload": patient_id})
        return StoredSettings(patient_id, settings, at, by)
