"""Leases on PostgreSQL: which replica is alive (its `replicas` row, heartbeated), and
which replica evaluates each patient's alerts (`patient_owners`, stamped with the
owner's epoch). Every time here is the database's clock: replicas' clocks may differ,
and a frozen replica's clock says nothing.

A patient is claimable when nobody owns it, or its owner's lease is not live any more
(no heartbeat within the lease, or the replica restarted since under a new epoch). The
claim is one upsert whose condition PostgreSQL evaluates on the locked row, so of
replicas racing for an orphan exactly one wins. The events writer checks ownership in
the transaction that stores a patient's alert events (`owned_of`, FOR SHARE): a claim
waits for such a transaction, and a replica that lost a patient stores nothing more
for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.storage.notify import CHANNEL_OWNERS, notify_sql

__all__ = ["DB_NOW", "OwnerStore", "owned_of"]

# The database's clock, in epoch seconds.
DB_NOW = "extract(epoch from clock_timestamp())"

_join = text(
    "INSERT INTO replicas (replica_id, epoch, started_at, heartbeat_at, rules_version) "
    f"VALUES (:r, 1, {DB_NOW}, {DB_NOW}, '') ON CONFLICT (replica_id) DO UPDATE SET "
    "epoch = replicas.epoch + 1, started_at = excluded.started_at, "
    "heartbeat_at = excluded.heartbeat_at RETURNING epoch"
)
# Renews only a lease still live: a replica that froze past its lease learns it lost it.
_heartbeat = text(
    f"UPDATE replicas SET heartbeat_at = {DB_NOW} WHERE replica_id = :r AND epoch = :e "
    f"AND heartbeat_at > {DB_NOW} - :ttl RETURNING replica_id"
)
_leave = text("UPDATE replicas SET heartbeat_at = 0 WHERE replica_id = :r AND epoch = :e")
_live_owner = (
    "EXISTS (SELECT 1 FROM replicas r WHERE r.replica_id = patient_owners.replica_id "
    f"AND r.epoch = patient_owners.epoch AND r.heartbeat_at > {DB_NOW} - :ttl)"
)
_claim = text(
    "INSERT INTO patient_owners (patient_id, replica_id, epoch, claimed_at) "
    f"VALUES (:p, :r, :e, {DB_NOW}) ON CONFLICT (patient_id) DO UPDATE SET "
    "replica_id = excluded.replica_id, epoch = excluded.epoch, "
    "claimed_at = excluded.claimed_at "
    "WHERE (patient_owners.replica_id = excluded.replica_id "
    "AND patient_owners.epoch = excluded.epoch) "
    f"OR NOT {_live_owner} RETURNING patient_id"
)
# A device of the patient connected to this replica: it is where the patient is now.
_take = text(
    "INSERT INTO patient_owners (patient_id, replica_id, epoch, claimed_at) "
    f"VALUES (:p, :r, :e, {DB_NOW}) ON CONFLICT (patient_id) DO UPDATE SET "
    "replica_id = excluded.replica_id, epoch = excluded.epoch, "
    "claimed_at = excluded.claimed_at RETURNING patient_id"
)
_orphans = text(f"SELECT patient_id FROM patient_owners WHERE NOT {_live_owner}")
_owned = text(
    "SELECT patient_id FROM patient_owners WHERE patient_id IN :ps "
    "AND replica_id = :r AND epoch = :e FOR SHARE"
).bindparams(bindparam("ps", expanding=True))


async def owned_of(
    conn: AsyncConnection, patients: Iterable[str], replica_id: str, epoch: int
) -> set[str]:
    """Of `patients`, those `replica_id` owns at `epoch`, locked until the transaction
    ends (a claim of them waits for it)."""
    ps = sorted(set(patients))
    if not ps:
        return set()
    rows = await conn.execute(_owned, {"ps": ps, "r": replica_id, "e": epoch})
    return set(rows.scalars())


class OwnerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _one(self, statement: Any, params: dict[str, Any]) -> Any:
        async with self._engine.begin() as conn:
            return await conn.scalar(statement, params)

    async def join(self, replica_id: str) -> int:
        """Start a lease for `replica_id`: its new epoch (the previous one's + 1)."""
        epoch: int = await self._one(_join, {"r": replica_id})
        return epoch

    async def heartbeat(self, replica_id: str, epoch: int, ttl_s: float) -> bool:
        """Renew the lease; False if it had lapsed (or a newer epoch took it over)."""
        return await self._one(_heartbeat, {"r": replica_id, "e": epoch, "ttl": ttl_s}) is not None

    async def leave(self, replica_id: str, epoch: int) -> None:
        """End the lease now, so survivors adopt its patients at once."""
        async with self._engine.begin() as conn:
            await conn.execute(_leave, {"r": replica_id, "e": epoch})

    async def claim(
        self, patient_id: str, replica_id: str, epoch: int, ttl_s: float, *, take: bool = False
    ) -> bool:
        """Own `patient_id` if nobody live does (or we already do), or whoever does with
        `take`; True when we own it now. The claim is announced on CHANNEL_OWNERS, so a
        previous owner still alive lets the patient go at once."""
        params: dict[str, Any] = {"p": patient_id, "r": replica_id, "e": epoch}
        if not take:
            params["ttl"] = ttl_s
        async with self._engine.begin() as conn:
            won = await conn.scalar(_take if take else _claim, params)
            if won is not None:
                payload = f"{replica_id} {epoch} {patient_id}"
                await conn.execute(notify_sql, {"channel": CHANNEL_OWNERS, "payload": payload})
        return won is not None

    async def orphans(self, ttl_s: float) -> list[str]:
        """Patients whose owner's lease is not live."""
        async with self._engine.connect() as conn:
            return list((await conn.execute(_orphans, {"ttl": ttl_s})).scalars())
