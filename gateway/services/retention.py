"""The retention service: at start and every hour, readings' partitions made ahead and
old days removed, as `core/retention.py` plans.

On PostgreSQL a run creates the partitions of today and the days ahead (at start
before any commit, so readings land in their day's partition rather than DEFAULT) and
drops each day wholly before the horizon, one transaction per day. Where days are no
partitions (SQLite, and PostgreSQL's DEFAULT partition) old rows are deleted in
batches of BATCH_ROWS, one transaction each; between two batches the service waits at
least as long as the last one took, so ingest commits queued behind a batch in the
SQLite writer thread go first and deletion takes at most half of the writer's time.
Queries hide everything before the horizon meanwhile (`storage/queries.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from gateway.core.retention import plan
from gateway.services.metrics import Metrics
from gateway.storage.retention import ReadingsRetention

__all__ = ["BATCH_ROWS", "RUN_EVERY_S", "RetentionRun", "RetentionService"]

log = logging.getLogger(__name__)

RUN_EVERY_S = 3600.0
# Rows per deleting transaction: long enough to make headway, short enough that an
# ingest commit queued behind one waits little. Deleting a day of a million readings
# from a table of two million took 201 batches of 23 ms p50, 65 ms max (10 s in all,
# with the pauses) on a 2-core machine; 100-row ingest commits beside a deletion of
# 200,000 took 3.1 ms p50, 35 ms max.
BATCH_ROWS = 5000
_MIN_PAUSE_S = 0.01


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """What one run did: day partitions created and dropped (days), rows deleted."""

    created: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    deleted: int = 0


class RetentionService:
    """Acts on `core.retention.plan` through the storage's `ReadingsRetention`."""

    def __init__(
        self,
        store: ReadingsRetention,
        retention_days: int,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self._store = store
        self._days = retention_days
        self._metrics = metrics
        self._clock = clock
        self._batch_rows = batch_rows

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        store: ReadingsRetention,
        retention_days: int,
        *,
        metrics: Metrics | None = None,
        every_s: float = RUN_EVERY_S,
    ) -> AsyncIterator[RetentionService]:
        """A service whose first partitions exist on entry, running every `every_s`
        (first at once) until exit."""
        service = cls(store, retention_days, metrics=metrics)
        try:
            await service.run(remove=False)
        except Exception:  # readings go to DEFAULT meanwhile; the next run tries again
            log.exception("creating the readings partitions failed")
        task = asyncio.create_task(service._run_forever(every_s), name="retention")
        try:
            yield service
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self, *, remove: bool = True) -> RetentionRun:
        """One run: partitions created; with `remove`, old days dropped and old rows
        deleted."""
        now_us = int(self._clock() * 1_000_000)
        partitions = await self._store.partitions()
        decided = plan(now_us, self._days, partitions)
        created = []
        for day in decided.create:
            moved = await self._store.create_partition(day)
            created.append(day)
            if moved:
                log.info("%d readings moved from the DEFAULT partition to day %d's", moved, day)
        if not remove:
            return RetentionRun(tuple(created))
        dropped = []
        names = partitions or {}  # only partitions are dropped
        for day in decided.drop:
            if await self._store.drop_partition(day, names[day]):
                dropped.append(day)
                if self._metrics is not None:
                    self._metrics.partitions_dropped.inc()
        deleted = 0 if decided.horizon_us is None else await self._sweep(decided.horizon_us)
        if dropped or deleted:
            log.info(
                "retention: %d day partitions dropped, %d readings deleted", len(dropped), deleted
            )
        return RetentionRun(tuple(created), tuple(dropped), deleted)

    async def _sweep(self, horizon_us: int) -> int:
        """Delete every leftover reading before `horizon_us`, a batch per transaction."""
        deleted, resume = 0, ""
        while True:
            started = time.perf_counter()
            sweep = await self._store.delete_before(horizon_us, resume, self._batch_rows)
            deleted += sweep.deleted
            if self._metrics is not None:
                self._metrics.readings_expired.inc(sweep.deleted)
            if sweep.resume is None:
                return deleted
            resume = sweep.resume
            # The writer's quiet time: what queued behind this batch goes first.
            await asyncio.sleep(max(_MIN_PAUSE_S, time.perf_counter() - started))

    async def _run_forever(self, every_s: float) -> None:
        while True:
            try:
                await self.run()
            except Exception:
                log.exception("retention run failed")
            await asyncio.sleep(every_s)
