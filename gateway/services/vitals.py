"""Vitals for dashboards, sans-I/O: the latest reading of each metric per patient,
collected between flushes so each patient gets at most one message per flush."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.core.rows import METRIC, TS_US, VALUE, ReadingRow

__all__ = ["PatientVitals", "VitalsThrottle"]


@dataclass(slots=True)
class PatientVitals:
    patient_id: str
    device_id: str
    ward: str
    # metric -> (ts_us, value): the newest by reading time since the last flush.
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)


class VitalsThrottle:
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
