"""Device stream protocol v1 (`GET /v1/devices/stream`).

Device → gateway: `readings`. Gateway → device: `welcome`, `ack`, `error`.
Frames are JSON text or MessagePack binary with the same structure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from schemas.metrics import METRICS, Metric

__all__ = [
    "DEFAULT_MAX_BATCH",
    "MAX_CLOCK_SKEW",
    "READINGS_ADAPTER",
    "Ack",
    "BadMessage",
    "BatchError",
    "ErrorCode",
    "ErrorDetail",
    "RateLimited",
    "Reading",
    "ReadingsMessage",
    "Welcome",
    "error_details",
]

DEFAULT_MAX_BATCH = 500
# A device clock this far ahead of the gateway's is wrong, and its readings would sort
# after everything real; old timestamps are fine (devices buffer while offline).
MAX_CLOCK_SKEW = timedelta(minutes=5)


class ErrorCode(StrEnum):
    """Every error code the gateway sends to a device."""

    INVALID_BATCH = "invalid_batch"
    BAD_MESSAGE = "bad_message"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"


def _require_string(value: object) -> object:
    # Pydantic would accept a Unix number as a datetime; RFC 3339 text is the protocol.
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp_type", "must be an RFC 3339 timestamp string with an explicit offset"
        )
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_string)]
# Strict: a JSON number (int or float), never a string, boolean or null; finite.
Value = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class Reading(BaseModel):
    """One metric value at one timestamp.

    Field order matters: `value` and `unit` are checked against `metric`, which pydantic
    validates first, so range and unit errors are located at the field that is wrong.
    Pass `context={"now": <aware datetime>}` to reject timestamps from the future.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ts: Timestamp
    metric: Metric
    value: Value
    unit: str | None = None

    @field_validator("ts")
    @classmethod
    def _not_in_future(cls, ts: datetime, info: ValidationInfo) -> datetime:
        now = info.context.get("now") if info.context else None
        if now is not None and ts - now > MAX_CLOCK_SKEW:
            raise PydanticCustomError(
                "timestamp_in_future",
                "timestamp is more than {limit} s ahead of the gateway's clock",
                {"limit": int(MAX_CLOCK_SKEW.total_seconds())},
            )
        return ts

    @field_validator("value")
    @classmethod
    def _plausible(cls, value: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric")
        if metric is not None:
            spec = METRICS[metric]
            if not spec.low <= value <= spec.high:
                raise PydanticCustomError(
                    "implausible_value",
                    "implausible {metric} {value}: must be within {low}..{high} {unit}",
                    {
                        "metric": metric.value,
                        "value": value,
                        "low": spec.low,
                        "high": spec.high,
                        "unit": spec.unit,
                    },
                )
        return value

    @field_validator("unit")
    @classmethod
    def _metric_unit(cls, unit: str | None, info: ValidationInfo) -> str | None:
        metric = info.data.get("metric")
        if unit is not None and metric is not None and unit != METRICS[metric].unit:
            raise PydanticCustomError(
                "wrong_unit",
                "unit of {metric} is '{expected}', not '{unit}'",
                {"metric": metric.value, "expected": METRICS[metric].unit, "unit": unit},
            )
        return unit


class ReadingsMessage(BaseModel):
    """One batch: the device's `seq` and its readings.

    `max_batch` is the gateway's setting, checked by the gateway's session alongside
    these rules so an oversized batch gets every one of its problems reported.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["readings"]
    # Stored as a 64-bit integer: larger is not a usable seq.
    seq: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
    readings: Annotated[list[Reading], Field(min_length=1)]


READINGS_ADAPTER: TypeAdapter[ReadingsMessage] = TypeAdapter(ReadingsMessage)


class Welcome(BaseModel):
    type: Literal["welcome"] = "welcome"
    device_id: str
    patient_id: str
    last_seq: int
    max_batch: int


class Ack(BaseModel):
    type: Literal["ack"] = "ack"
    seq: int


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str


class BatchError(BaseModel):
    """A batch that failed validation: nothing of it was stored, its seq is not used up."""

    type: Literal["error"] = "error"
    seq: int
    code: Literal[ErrorCode.INVALID_BATCH] = ErrorCode.INVALID_BATCH
    errors: list[ErrorDetail]


class RateLimited(BaseModel):
    """The device sends more readings than its limit: this batch was not stored and its
    seq is not used up; slow down and resend."""

    type: Literal["error"] = "error"
    seq: int
    code: Literal[ErrorCode.RATE_LIMITED] = ErrorCode.RATE_LIMITED
    detail: str


class BadMessage(BaseModel):
    """A frame that is not a batch at all (or any other connection-level complaint)."""

    type: Literal["error"] = "error"
    code: ErrorCode = ErrorCode.BAD_MESSAGE
    detail: str


def error_details(errors: list[dict[str, Any]]) -> list[ErrorDetail]:
    return [ErrorDetail(loc=list(e["loc"]), msg=e["msg"]) for e in errors]
