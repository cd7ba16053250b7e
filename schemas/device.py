"""Device stream protocol v1 (`GET /v1/devices/stream`).

Device → gateway: `readings`. Gateway → device: `welcome`, `ack`, `error` (its codes:
`schemas.codes.DeviceErrorCode`).
Frames are JSON text or MessagePack binary with the same structure.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    Protocol,
    TypeAlias,
    Union,
    runtime_checkable,
)

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    create_model,
)
from pydantic_core import ErrorDetails as ErrorDict
from pydantic_core import PydanticCustomError

from schemas.codes import DeviceErrorCode
from schemas.metrics import METRICS, Metric

__all__ = [
    "DEFAULT_MAX_BATCH",
    "EARLIEST",
    "MAX_CLOCK_SKEW",
    "READINGS_ADAPTER",
    "READINGS_PYTHON_ADAPTER",
    "Ack",
    "BadMessage",
    "BatchError",
    "ErrorDetail",
    "RateLimited",
    "Reading",
    "ReadingsMessage",
    "Welcome",
    "error_details",
    "future_timestamps",
]

DEFAULT_MAX_BATCH = 500
# A device clock this far ahead of the gateway's is wrong, and its readings would sort
# after everything real; old timestamps are fine (devices buffer while offline).
MAX_CLOCK_SKEW = timedelta(minutes=5)
# The earliest instant a reading may carry. RFC 3339 takes "0001-01-01T00:00:00+01:00",
# which is in year 0 in UTC: no datetime holds that instant, so such a reading could be
# stored but never shown (the query API and the dashboard's vitals would fail on it).
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


def _require_string(value: object) -> object:
    # MessagePack frames are validated from Python objects, where pydantic would take a
    # datetime or a Unix number; RFC 3339 text is the protocol.
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be a valid datetime")
    return value


# JSON frames: strict parsing takes only RFC 3339 strings, in Rust. MessagePack frames
# arrive as Python objects, so they need the string check above.
JsonTimestamp = Annotated[AwareDatetime, Field(strict=True, ge=EARLIEST)]
PythonTimestamp = Annotated[AwareDatetime, Field(ge=EARLIEST), BeforeValidator(_require_string)]


def _reading_models(ts: Any) -> tuple[type[BaseModel], ...]:
    """One model per metric, so range and unit checks run inside pydantic-core.

    Strict value: a JSON number (int or float), never a string, boolean or null; finite;
    within the metric's plausible range, bounds included. Unknown fields are refused.
    """
    return tuple(
        create_model(
            f"{metric.value}_reading",
            __config__=ConfigDict(extra="forbid", frozen=True),
            ts=(ts, ...),
            metric=(Literal[metric.value], ...),  # type: ignore[arg-type]
            value=(
                Annotated[StrictFloat, Field(ge=spec.low, le=spec.high, allow_inf_nan=False)],
                ...,
            ),
            unit=(Literal[spec.unit] | None, None),  # type: ignore[arg-type]
        )
        for metric, spec in METRICS.items()
    )


_JSON_READINGS = _reading_models(JsonTimestamp)
_PYTHON_READINGS = _reading_models(PythonTimestamp)


@runtime_checkable
class Reading(Protocol):
    """What a validated reading offers, whichever metric's model it came from."""

    @property
    def ts(self) -> datetime: ...
    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str | None: ...


if TYPE_CHECKING:
    # What code sees of a validated reading, whichever metric's model it came from.
    JsonReading: TypeAlias = Reading
    PythonReading: TypeAlias = Reading
else:
    JsonReading = Annotated[Union[_JSON_READINGS], Field(discriminator="metric")]  # noqa: UP007
    PythonReading = Annotated[Union[_PYTHON_READINGS], Field(discriminator="metric")]  # noqa: UP007


class ReadingsMessage(BaseModel):
    """One batch: the device's `seq` and its readings.

    `max_batch` is the gateway's setting, checked by the gateway's session alongside
    these rules so an oversized batch gets every one of its problems reported.
    Timestamps more than MAX_CLOCK_SKEW ahead are found by `future_timestamps`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["readings"]
    # Stored as a 64-bit integer: larger is not a usable seq.
    seq: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
    readings: Annotated[list[JsonReading], Field(min_length=1)]


class _PythonReadingsMessage(ReadingsMessage):
    readings: Annotated[list[PythonReading], Field(min_length=1)]


# Module-level validators, built once: JSON text frames and MessagePack (Python) frames.
READINGS_ADAPTER: TypeAdapter[ReadingsMessage] = TypeAdapter(ReadingsMessage)
READINGS_PYTHON_ADAPTER: TypeAdapter[ReadingsMessage] = TypeAdapter(_PythonReadingsMessage)


def future_timestamps(stamps: Iterable[datetime | None], now: datetime) -> list[ErrorDetail]:
    """Readings stamped more than MAX_CLOCK_SKEW after `now` (given each reading's
    timestamp, None where it has none), as located errors."""
    limit = now + MAX_CLOCK_SKEW
    return [
        ErrorDetail(loc=["readings", i, "ts"], msg=_FUTURE)
        for i, ts in enumerate(stamps)
        if ts is not None and ts > limit
    ]


_FUTURE = (
    f"timestamp is more than {int(MAX_CLOCK_SKEW.total_seconds())} s ahead of the gateway's clock"
)


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
    code: Literal[DeviceErrorCode.INVALID_BATCH] = DeviceErrorCode.INVALID_BATCH
    errors: list[ErrorDetail]


class RateLimited(BaseModel):
    """The device sends more readings than its limit: this batch was not stored and its
    seq is not used up; slow down and resend."""

    type: Literal["error"] = "error"
    seq: int
    code: Literal[DeviceErrorCode.RATE_LIMITED] = DeviceErrorCode.RATE_LIMITED
    detail: str


class BadMessage(BaseModel):
    """A frame that is not a batch at all (or any other connection-level complaint)."""

    type: Literal["error"] = "error"
    code: DeviceErrorCode = DeviceErrorCode.BAD_MESSAGE
    detail: str


def error_details(errors: list[ErrorDict]) -> list[ErrorDetail]:
    """Pydantic's errors in the protocol's terms: located at the field a device wrote
    (no internal union tags) with messages that name the metric's range and unit."""
    return [_detail(e) for e in errors]


_METRIC_NAMES = {m.value for m in Metric}

# How a device's input is quoted back in an error: short, and safe for any value (a
# MessagePack frame may nest 1000 deep, past what `repr` can recurse through).
_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxstring, _ECHO.maxother, _ECHO.maxlong = 2, 40, 40, 40


def _echo(value: object) -> str:
    return _ECHO.repr(value)


def _detail(e: ErrorDict) -> ErrorDetail:
    loc = list(e["loc"])
    kind = e.get("type", "")
    if loc[:1] == ["readings"] and len(loc) >= 3 and loc[2] in _METRIC_NAMES:
        metric = str(loc.pop(2))  # the union tag pydantic puts in the path
        spec = METRICS[Metric(metric)]
        field = loc[-1] if len(loc) == 3 else None
        if field == "value" and kind in ("greater_than_equal", "less_than_equal"):
            value = e.get("input")
            return ErrorDetail(
                loc=loc,
                msg=f"implausible {metric} {_echo(value)}: must be within "
                f"{spec.low:g}..{spec.high:g} {spec.unit}",
            )
        if field == "unit" and kind == "literal_error":
            return ErrorDetail(
                loc=loc, msg=f"unit of {metric} is '{spec.unit}', not {_echo(e.get('input'))}"
            )
        return ErrorDetail(loc=loc, msg=e["msg"])
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc[:1] == ["readings"]:
        names = ", ".join(sorted(_METRIC_NAMES))
        if kind == "union_tag_not_found":
            return ErrorDetail(loc=[*loc, "metric"], msg="Field required")
        tag = (e.get("ctx") or {}).get("tag")
        return ErrorDetail(
            loc=[*loc, "metric"], msg=f"unknown metric {_echo(tag)}: expected one of {names}"
        )
    return ErrorDetail(loc=loc, msg=e["msg"])
