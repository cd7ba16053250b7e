"""Which patients' alerts this replica evaluates, when replicas share PostgreSQL.

One owner per patient at a time, under leases with epochs (storage/owners.py):

- This replica's lease is its `replicas` row, renewed every `BEAT_S`; a replica silent
  for `LEASE_S` (killed, frozen, cut off) is dead to the others. Each start, and each
  time it finds its own lease lapsed (it was frozen), it takes a new epoch and lets go
  of every patient: whatever it held in memory may be stale.
- A replica takes a patient when one of its devices connects here (the device's stream
  moved here, its older stream is fenced off), and every `BEAT_S` it claims the
  patients of dead owners (the orphans), which succeeds only when the owner's lease is
  not live. Each change of hands is announced, and a live previous owner lets the
  patient go at once.
- Every commit of a patient's alert events checks, in its transaction, that this
  replica owns the patient at its current epoch; a replica that woke up after its
  patients were taken over stores nothing for them (OwnershipLost) and lets them go.

The alert service adopts what it wins (services/alert_replicas.py): the patients' open
alerts, their devices' last-seen times (the offline deadline), and their recent
readings replayed through the engine to rebuild pending `for_s` runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.storage.owners import OwnerStore

__all__ = ["BEAT_S", "LEASE_S", "Ownership"]

log = logging.getLogger(__name__)

# A replica that has not renewed its lease for this long is dead to the others: its
# patients are taken over within LEASE_S + BEAT_S (the take-over time).
LEASE_S = 3.0
BEAT_S = 0.5


class Ownership:
    def __init__(self, owners: OwnerStore, replica_id: str) -> None:
        self._owners = owners
        self.replica_id = replica_id
        self.epoch = 0
        self.owned: set[str] = set()
        # Claimed in the database but not adopted yet (an adoption failed): retried.
        self.unadopted: set[str] = set()

    async def join(self) -> int:
        """Start a new lease (a new epoch); owns nothing yet."""
        self.epoch = await self._owners.join(self.replica_id)
        self.owned.clear()
        self.unadopted.clear()
        log.info("replica %s joined at epoch %d", self.replica_id, self.epoch)
        return self.epoch

    async def claim(self, patient_id: str, *, take: bool = False) -> bool:
        """Claim `patient_id` unless a live replica owns it (whoever does, with `take`:
        its device is here now); True if newly ours."""
        if patient_id in self.owned:
            return False
        return await self._owners.claim(patient_id, self.replica_id, self.epoch, LEASE_S, take=take)

    def taken(self, payload: str) -> set[str]:
        """A CHANNEL_OWNERS notification: the patients of ours another owner took."""
        replica_id, _, rest = payload.partition(" ")
        epoch, _, patient_id = rest.partition(" ")
        if (replica_id, epoch) == (self.replica_id, str(self.epoch)):
            return set()
        return {patient_id} & self.owned

    def lost(self, patients: set[str]) -> None:
        self.owned -= patients
        self.unadopted -= patients

    async def leave(self) -> None:
        """End the lease at shutdown, so survivors adopt the patients at once."""
        await self._owners.leave(self.replica_id, self.epoch)

    async def run(
        self,
        adopt: Callable[[list[str]], Awaitable[None]],
        rejoin: Callable[[], Awaitable[None]],
    ) -> None:
        """Renew the lease and claim orphans every BEAT_S until cancelled; `adopt` what
        is won, `rejoin` when the lease lapsed (after a freeze)."""
        while True:
            await asyncio.sleep(BEAT_S)
            try:
                if not await self._owners.heartbeat(self.replica_id, self.epoch, LEASE_S):
                    log.warning(
                        "replica %s: lease of epoch %d lapsed; letting every patient go",
                        self.replica_id,
                        self.epoch,
                    )
                    await rejoin()
                    continue
                won = []
                for patient_id in await self._owners.orphans(LEASE_S):
                    if await self.claim(patient_id):
                        won.append(patient_id)
                if won:
                    log.info("taking over %d patients of a replica gone silent", len(won))
                retry = sorted(self.unadopted - self.owned - set(won))
                if won or retry:
                    self.unadopted.update(won)
                    await adopt(won + retry)
                    self.unadopted -= self.owned
            except Exception as e:  # the database is away: others cannot take over either
                log.warning("lease renewal failed: %s", e)
