"""The vital-sign metrics the gateway accepts: name, UCUM unit and plausible range."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["METRICS", "Metric", "MetricSpec"]


class Metric(StrEnum):
    HEART_RATE = "heart_rate"
    SPO2 = "spo2"
    RESP_RATE = "resp_rate"
    TEMPERATURE = "temperature"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's unit (UCUM code) and the range, bounds included, a sensor can plausibly report.

    Values outside the range are sensor faults or typos, not patients: they are rejected.
    """

    unit: str
    low: float
    high: float


METRICS: dict[Metric, MetricSpec] = {
    Metric.HEART_RATE: MetricSpec("/min", 0, 300),
    Metric.SPO2: MetricSpec("%", 0, 100),
    Metric.RESP_RATE: MetricSpec("/min", 0, 100),
    Metric.TEMPERATURE: MetricSpec("Cel", 25, 45),
    Metric.SYSTOLIC_BP: MetricSpec("mm[Hg]", 0, 300),
    Metric.DIASTOLIC_BP: MetricSpec("mm[Hg]", 0, 250),
}
