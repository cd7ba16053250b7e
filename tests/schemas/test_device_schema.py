"""schemas.device: what a `readings` batch accepts, and where each rejection is located."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.device import (
    DEFAULT_MAX_BATCH,
    MAX_CLOCK_SKEW,
    READINGS_ADAPTER,
    READINGS_PYTHON_ADAPTER,
    ErrorDetail,
    ReadingsMessage,
    error_details,
    future_timestamps,
)
from schemas.metrics import METRICS, Metric
from tests.support.frames import batch, reading

NOW = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)


class Invalid(Exception):
    """The batch was refused; `details` are the located errors a device would get."""

    def __init__(self, details: list[ErrorDetail]) -> None:
        super().__init__(details)
        self.details = details


def _check(validate: Any, data: Any, now: datetime | None) -> ReadingsMessage:
    """Validate as the gateway does: the adapter, then the protocol's error translation
    and (given a `now`) the clock-skew check."""
    try:
        batch: ReadingsMessage = validate(data)
    except ValidationError as e:
        raise Invalid(error_details(e.errors(include_url=False))) from e
    if now is not None and (future := future_timestamps((r.ts for r in batch.readings), now)):
        raise Invalid(future)
    return batch


def parse(readings: list[dict[str, Any]], now: datetime | None = None) -> ReadingsMessage:
    """Validate a batch from JSON text, as the gateway does for text frames."""
    return _check(READINGS_ADAPTER.validate_json, json.dumps(batch(1, readings)), now)


def locs(details: list[ErrorDetail]) -> list[tuple[Any, ...]]:
    return [tuple(d.loc) for d in details]


def error_locs(
    readings: list[dict[str, Any]], now: datetime | None = None
) -> list[tuple[Any, ...]]:
    """The locations of every error of a batch that must be invalid."""
    with pytest.raises(Invalid) as info:
        parse(readings, now)
    return locs(info.value.details)


def python_error_locs(readings: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """As `error_locs`, through the Python path the MessagePack frames take."""
    with pytest.raises(Invalid) as info:
        _check(READINGS_PYTHON_ADAPTER.validate_python, batch(1, readings), None)
    return locs(info.value.details)


metrics = st.sampled_from(list(Metric))


@st.composite
def in_range(draw: st.DrawFn) -> tuple[Metric, float | int]:
    """A metric and a value in its range, bounds included, as an int or a float."""
    metric = draw(metrics)
    spec = METRICS[metric]
    value = draw(
        st.sampled_from([spec.low, spec.high])
        | st.integers(int(spec.low), int(spec.high))
        | st.floats(spec.low, spec.high)
    )
    return metric, value


@st.composite
def out_of_range(draw: st.DrawFn) -> tuple[Metric, float | int]:
    """A metric and a finite value outside its range, as an int or a float."""
    metric = draw(metrics)
    spec = METRICS[metric]
    value = draw(
        st.floats(max_value=spec.low, exclude_max=True, allow_infinity=False)
        | st.floats(min_value=spec.high, exclude_min=True, allow_infinity=False)
        | st.integers(max_value=int(spec.low) - 1, min_value=-(10**15))
        | st.integers(min_value=int(spec.high) + 1, max_value=10**15)
    )
    return metric, value


wrong_types = (
    st.text(max_size=10)
    | st.booleans()
    | st.none()
    | st.lists(st.integers(0, 100), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)

# RFC 3339 allows offsets up to ±23:59, in whole minutes.
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


class TestValues:
    @given(in_range(), st.integers(0, 4), st.integers(0, 4))
    def test_every_value_in_range_passes(
        self, case: tuple[Metric, float | int], before: int, after: int
    ) -> None:
        """Any value within a metric's range (bounds included, int or float) is accepted."""
        metric, value = case
        batch = (
            [reading()] * before + [reading(metric=metric.value, value=value)] + [reading()] * after
        )
        parsed = parse(batch)
        assert parsed.readings[before].metric == metric
        assert parsed.readings[before].value == value

    @given(out_of_range(), st.integers(0, 4), st.integers(0, 4))
    def test_every_value_out_of_range_fails_at_its_value(
        self, case: tuple[Metric, float | int], before: int, after: int
    ) -> None:
        """A value outside its metric's range fails, located at ("readings", i, "value")."""
        metric, value = case
        batch = (
            [reading()] * before + [reading(metric=metric.value, value=value)] + [reading()] * after
        )
        assert error_locs(batch) == [("readings", before, "value")]

    @given(wrong_types, st.integers(0, 4))
    def test_every_wrongly_typed_value_fails_at_its_value(self, value: Any, index: int) -> None:
        """A string, bool, null, list or object as value fails at ("readings", i, "value")."""
        batch = [reading()] * index + [reading(value=value)]
        assert error_locs(batch) == [("readings", index, "value")]
        assert python_error_locs(batch) == [("readings", index, "value")]

    @pytest.mark.parametrize("value", ["72", "72.0", True, False, None, [72], {"v": 72}])
    def test_numeric_looking_or_falsy_values_of_other_types_fail(self, value: Any) -> None:
        """No coercion: "72", booleans (which Python treats as ints) and null are rejected."""
        assert error_locs([reading(value=value)]) == [("readings", 0, "value")]

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
    def test_non_finite_json_values_fail(self, literal: str) -> None:
        """NaN/Infinity literals and overflowing numbers in JSON text fail at value."""
        raw = json.dumps(batch(1, [reading(), reading(value=0)])).replace(
            '"value": 0}', f'"value": {literal}}}'
        )
        with pytest.raises(Invalid) as info:
            _check(READINGS_ADAPTER.validate_json, raw, None)
        assert locs(info.value.details) == [("readings", 1, "value")]

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_non_finite_python_values_fail(self, value: float) -> None:
        """NaN and ±inf (as MessagePack floats decode) fail at value."""
        assert python_error_locs([reading(value=value)]) == [("readings", 0, "value")]

    def test_value_is_checked_against_its_own_metric(self) -> None:
        """150 is a valid heart rate but an impossible SpO2."""
        parse([reading(metric="heart_rate", value=150)])
        assert error_locs([reading(metric="spo2", value=150)]) == [("readings", 0, "value")]

    def test_unknown_metric_fails_at_metric(self) -> None:
        """A metric outside the known set fails at ("readings", i, "metric")."""
        assert error_locs([reading(metric="glucose")]) == [("readings", 0, "metric")]


class TestUnits:
    @pytest.mark.parametrize("metric", list(Metric))
    def test_matching_ucum_unit_passes(self, metric: Metric) -> None:
        """Each metric accepts its own UCUM unit, and no unit at all."""
        value = METRICS[metric].low
        unit = METRICS[metric].unit
        assert (
            parse([reading(metric=metric.value, value=value, unit=unit)]).readings[0].unit == unit
        )
        assert parse([reading(metric=metric.value, value=value)]).readings[0].unit is None

    @pytest.mark.parametrize(
        ("metric", "unit"),
        [("heart_rate", "bpm"), ("spo2", "/min"), ("temperature", "C"), ("systolic_bp", "mmHg")],
    )
    def test_unit_mismatch_fails_at_unit(self, metric: str, unit: str) -> None:
        """A unit other than the metric's UCUM code fails at ("readings", i, "unit")."""
        value = METRICS[Metric(metric)].low
        assert error_locs([reading(), reading(metric=metric, value=value, unit=unit)]) == [
            ("readings", 1, "unit")
        ]

    def test_non_string_unit_fails_at_unit(self) -> None:
        """A unit that is not a string fails at unit."""
        assert error_locs([reading(unit=60)]) == [("readings", 0, "unit")]


class TestTimestamps:
    @given(
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
        offsets,
    )
    def test_any_offset_parses_to_the_same_instant(self, local: datetime, tz: timezone) -> None:
        """An RFC 3339 timestamp with any offset parses to that exact instant, microseconds kept."""
        ts = local.replace(tzinfo=tz)
        parsed = parse([reading(ts=ts.isoformat())]).readings[0].ts
        assert parsed == ts
        assert parsed.astimezone(UTC) == ts.astimezone(UTC)
        assert parsed.utcoffset() == tz.utcoffset(None)

    @pytest.mark.parametrize(
        ("text", "utc"),
        [
            ("2026-11-26T13:00:00.250Z", datetime(2026, 11, 26, 13, 0, 0, 250000, tzinfo=UTC)),
            ("2026-11-26T13:00:00z", datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
            ("2026-11-26T18:30:00+05:30", datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
            ("2026-11-26T05:00:00-08:00", datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
            ("2026-11-27T00:45:00+11:45", datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
            ("2026-11-26T13:00:00-00:00", datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
        ],
    )
    def test_offsets_normalise_to_utc(self, text: str, utc: datetime) -> None:
        """Timestamps with Z, positive, negative and odd offsets denote the expected UTC instant."""
        parsed = parse([reading(ts=text)]).readings[0].ts
        assert parsed.astimezone(UTC) == utc
        assert parsed.astimezone(UTC).replace(tzinfo=None) == utc.replace(tzinfo=None)

    @pytest.mark.parametrize(
        "ts",
        [
            pytest.param("2026-11-26T13:00:00", id="naive"),
            pytest.param("2026-11-26T13:00:00.250", id="naive-fraction"),
            pytest.param("2026-11-26", id="date-only"),
            pytest.param("yesterday", id="words"),
            pytest.param("", id="empty"),
            pytest.param(1764162000, id="unix-int"),
            pytest.param(1764162000.25, id="unix-float"),
            pytest.param(None, id="null"),
        ],
    )
    def test_naive_numeric_or_garbage_timestamp_fails_at_ts(self, ts: Any) -> None:
        """A timestamp without offset, a Unix number or garbage fails at ("readings", i, "ts")."""
        assert error_locs([reading(), reading(ts=ts)]) == [("readings", 1, "ts")]

    def test_numeric_timestamp_fails_in_python_mode_too(self) -> None:
        """A Unix number is refused on the MessagePack path as well."""
        assert python_error_locs([reading(ts=1764162000)]) == [("readings", 0, "ts")]

    def test_future_beyond_skew_fails_against_context_now(self) -> None:
        """With context now, a timestamp more than 5 min ahead fails at ts; exactly 5 min passes."""
        at_limit = (NOW + MAX_CLOCK_SKEW).isoformat()
        beyond = (NOW + MAX_CLOCK_SKEW + timedelta(milliseconds=1)).isoformat()
        parse([reading(ts=at_limit)], now=NOW)
        assert error_locs([reading(ts=at_limit), reading(ts=beyond)], now=NOW) == [
            ("readings", 1, "ts")
        ]

    def test_future_is_judged_in_utc_whatever_the_offset(self) -> None:
        """A local-time stamp that is only "ahead" in wall-clock terms is not in the future."""
        wall_clock_ahead = "2026-11-26T18:33:00+05:30"  # 13:03 UTC: 3 min ahead
        parse([reading(ts=wall_clock_ahead)], now=NOW)

    def test_old_timestamps_are_accepted(self) -> None:
        """Buffered readings from long ago are fine."""
        parse([reading(ts="2001-01-01T00:00:00Z")], now=NOW)

    def test_without_context_no_future_check(self) -> None:
        """Without a `now` in the context, the future check does not apply."""
        parse([reading(ts="2099-01-01T00:00:00Z")])


class TestShape:
    def test_unknown_reading_field_fails_at_its_name(self) -> None:
        """An unknown field in a reading fails at ("readings", i, <field name>)."""
        assert error_locs([reading(), reading(quality="good")]) == [("readings", 1, "quality")]

    @pytest.mark.parametrize("field", ["ts", "metric", "value"])
    def test_missing_required_field_fails_at_it(self, field: str) -> None:
        """A reading without ts, metric or value fails at that field."""
        incomplete = reading()
        del incomplete[field]
        assert error_locs([incomplete]) == [("readings", 0, field)]

    def test_every_problem_is_reported(self) -> None:
        """Problems in several readings and several fields of one reading are all listed."""
        batch = [
            reading(ts="2026-11-26T13:00:00", value="x"),
            reading(),
            reading(unit="bpm", extra=1),
        ]
        assert sorted(error_locs(batch)) == [
            ("readings", 0, "ts"),
            ("readings", 0, "value"),
            ("readings", 2, "extra"),
            ("readings", 2, "unit"),
        ]

    def test_error_locations_carry_no_union_tags(self) -> None:
        """Every location is readings, an index, then a plain field name."""
        batch = [reading(value=None, unit=3, ts=5, metric="x")]
        for loc in error_locs(batch):
            assert loc[:2] == ("readings", 0)
            assert loc[2] in {"ts", "metric", "value", "unit"}
            assert len(loc) == 3

    def test_empty_batch_fails_at_readings(self) -> None:
        """A batch with no readings fails at ("readings",)."""
        assert error_locs([]) == [("readings",)]

    def test_the_schema_sets_no_batch_limit(self) -> None:
        """max_batch is the gateway's setting, enforced by its session: the schema itself
        takes more than DEFAULT_MAX_BATCH readings."""
        assert len(parse([reading()] * (DEFAULT_MAX_BATCH + 1)).readings) == DEFAULT_MAX_BATCH + 1
