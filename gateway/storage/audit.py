"""The audit log: provisioning and acknowledgements, for security and clinical review."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.schema import AuditEntry, table_of

__all__ = ["AuditLog", "AuditRecord"]

_audit = table_of(AuditEntry)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    address: str
    detail: str


class AuditLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(
        self, actor: str, action: str, target: str, address: str, detail: str = ""
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(_audit),
                {
                    "at": datetime.now(UTC),
                    "actor": actor,
                    "action": action,
                    "target": target,
                    "address": address,
                    "detail": detail,
                },
            )

    async def entries(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        query = select(_audit).where(_audit.c.id > after_id)
        if actor is not None:
            query = query.where(_audit.c.actor == actor)
        if action is not None:
            query = query.where(_audit.c.action == action)
        async with self._engine.connect() as conn:
            rows = await conn.execute(query.order_by(_audit.c.id).limit(limit))
            return [AuditRecord(**r._mapping) for r in rows]
