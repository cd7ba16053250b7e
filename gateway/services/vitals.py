"""Vitals for dashboards: the latest reading of each metric per patient, pushed at most
once a `VITALS_EVERY_S` to the dashboards that asked for vitals.

`VitalsPublisher` is a `CommitObserver` of the group committer: it sees each batch once
it is stored, collects it (only while some dashboard wants vitals) in the sans-I/O
`VitalsThrottle`, and its own timer flushes what was collected to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.core.rows import METRIC, TS_US, VALUE, ReadingRow
from gateway.services.committer import PendingBatch
from gateway.services.hub import Hub
from schemas.dashboard import VitalReading, Vitals
from schemas.metrics import METRICS, Metric

__all__ = ["VITALS_EVERY_S", "PatientVitals", "VitalsPublisher", "VitalsThrottle"]

log = logging.getLogger(__name__)

# How often each patient's vitals go out, at most.
VITALS_EVERY_S = 1.0


@dataclass(slots=True)
class PatientVitals:
    patient_id: str
    device_id: str
    ward: str
    # metric -> (ts_us, value): the newest by reading time since the last flush.
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)


class VitalsThrottle:
    """Sans-I/O: collects readings between flushes, so each patient gets at most one
    message per flush."""

    def __init__(self) -> None:
        self._pending: dict[str, PatientVitals] = {}

    def add(self, patient_id: str, device_id: str, ward: str, rows: Iterable[ReadingRow]) -> None:
        entry = self._pending.get(patient_id)
        if entry is None or entry.device_id != device_id:
            entry = self._pending[patient_id] = PatientVitals(patient_id, device_id, ward)
        latest = entry.latest
        for row in rows:
            metric, ts_us = row[METRIC], row[TS_US]
            seen = latest.get(metric)
            if seen is None or ts_us >= seen[0]:
                latest[metric] = (ts_us, row[VALUE])

    def flush(self) -> list[PatientVitals]:
        """Everything collected since the previous flush, then start afresh."""
        out = list(self._pending.values())
        self._pending.clear()
        return out


class VitalsPublisher:
    """Committed readings in, throttled `vitals` messages out to the hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._throttle = VitalsThrottle()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, hub: Hub) -> AsyncIterator[VitalsPublisher]:
        """A publisher whose timer flushes every VITALS_EVERY_S until exit."""
        publisher = cls(hub)
        timer = asyncio.create_task(publisher._flush_forever(), name="vitals-timer")
        try:
            yield publisher
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    def batches_committed(self, fresh: list[PendingBatch]) -> None:
        """CommitObserver: collect the stored batches, while some dashboard wants vitals."""
        if not self._hub.wants_vitals():
            return
        for b in fresh:
            self._throttle.add(b.patient_id, b.device_id, b.ward, b.rows)

    def flush(self) -> None:
        """Push what was collected since the last flush: one message per patient."""
        for p in self._throttle.flush():
            readings = [
                VitalReading(
                    ts=datetime.fromtimestamp(ts / 1e6, UTC),
                    metric=Metric(m),
                    value=v,
                    unit=METRICS[Metric(m)].unit,
                )
                for m, (ts, v) in p.latest.items()
            ]
            msg = Vitals(patient_id=p.patient_id, device_id=p.device_id, readings=readings)
            self._hub.publish_vitals(p.ward, msg.model_dump_json())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(VITALS_EVERY_S)
            try:
                self.flush()
            except Exception:
                log.exception("vitals timer failed")
