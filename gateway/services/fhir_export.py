"""Bulk Data export jobs: each `$export` is planned in the background into files of
at most `FILE_READINGS` readings (id ranges of its snapshot), and the plan is stored
step by step in the job's row.

Any replica answers a job's status and serves its files from that row. A planner that
went quiet (its replica stopped) is taken over by the next status poll on any replica:
each step stores its progress only if the job's heartbeat is still the one it read, so
two planners never both advance a job, and a cancelled (deleted) job stops its planner
at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from gateway.storage.fhir import ExportJob, FhirStore

__all__ = ["FILE_READINGS", "STALE_US", "ExportPlanner"]

log = logging.getLogger(__name__)

# Readings per Observation file: a file is one download a client can retry on its own;
# a million readings make four (each about 250 MB of NDJSON).
FILE_READINGS: Final = 250_000
# A planning job whose heartbeat is this old is taken over by the next poll.
STALE_US: Final = 30_000_000


def _now_us() -> int:
    return int(time.time() * 1_000_000)


class ExportPlanner:
    """This replica's planning tasks (one per job it plans)."""

    def __init__(self, store: FhirStore, *, file_readings: int = FILE_READINGS) -> None:
        self._store = store
        self._file_readings = file_readings
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, store: FhirStore, *, file_readings: int = FILE_READINGS
    ) -> AsyncIterator[ExportPlanner]:
        planner = cls(store, file_readings=file_readings)
        try:
            yield planner
        finally:
            await planner.stop()

    def start(self, job: ExportJob) -> None:
        """Plan `job` from where its row says it got to."""
        task = asyncio.create_task(self._plan(job), name=f"fhir-export-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def take_over_if_stale(self, job: ExportJob) -> None:
        """Resume a job whose planner went quiet (called on each status poll)."""
        if job.status == "planning" and _now_us() - job.heartbeat_us > STALE_US:
            log.warning("taking over the planning of export %s", job.id)
            self.start(job)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _plan(self, job: ExportJob) -> None:
        files: list[list[Any]] = list(job.files)
        after, beat = job.planned_to, job.heartbeat_us
        try:
            if not files:
                files = await self._small_files(job)
            while True:
                if "Observation" in job.types:
                    hi, count = await self._store.next_cut(job, after, self._file_readings)
                else:
                    hi, count = job.snapshot, 0
                if count:
                    files.append(["Observation", after, hi, count])
                    after = hi
                done = count == 0 or hi >= job.snapshot
                now = _now_us()
                status = "complete" if done else "planning"
                if not await self._store.save_plan(
                    job.id, beat, files=files, planned_to=after, status=status, heartbeat_us=now
                ):
                    return  # cancelled, or another replica took it over
                if done:
                    return
                beat = now
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("planning export %s failed", job.id)
            await self._store.save_plan(
                job.id, beat, files=files, planned_to=after, status="failed",
                heartbeat_us=_now_us(), error=f"planning failed: {type(e).__name__}",
            )  # fmt: skip

    async def _small_files(self, job: ExportJob) -> list[list[Any]]:
        """The Patient and Device files: one each (a ward's devices, not its readings)."""
        devices = await self._store.export_devices(job)
        files: list[list[Any]] = []
        if "Patient" in job.types:
            files.append(["Patient", 0, 0, len({patient for _, patient, _ in devices})])
        if "Device" in job.types:
            files.append(["Device", 0, 0, len(devices)])
        return [f for f in files if f[3]]
