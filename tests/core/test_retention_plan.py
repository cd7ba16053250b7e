"""The retention decision, without a database: the horizon at whole UTC days, and which
day partitions a maintenance run creates and drops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.retention import (
    AHEAD_DAYS,
    DAY_US,
    RetentionPlan,
    day_of,
    day_start_us,
    horizon_us,
    plan,
)


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1_000_000)


NOW = us("2026-12-05T13:45:00")
TODAY = day_of(NOW)


def test_days_are_utc_days_floored_before_1970_too() -> None:
    """A timestamp's day is the UTC day it falls in; the microsecond before 1970 is day -1."""
    assert day_start_us(TODAY) == us("2026-12-05T00:00:00")
    assert day_of(us("2026-12-05T23:59:59.999999")) == TODAY
    assert day_of(us("2026-12-06T00:00:00")) == TODAY + 1
    assert (day_of(0), day_of(-1), day_of(-DAY_US), day_of(-DAY_US - 1)) == (0, -1, -1, -2)


def test_zero_keeps_everything() -> None:
    """retention_days 0: no horizon, nothing to drop, whatever the partitions' age."""
    assert horizon_us(NOW, 0) is None
    result = plan(NOW, 0, {TODAY - 1000, TODAY - 1, TODAY})
    assert result.horizon_us is None
    assert result.drop == ()


@pytest.mark.parametrize(
    ("days", "oldest_kept"),
    [(1, "2026-12-04T00:00:00"), (7, "2026-11-28T00:00:00"), (30, "2026-11-05T00:00:00")],
)
def test_the_horizon_is_the_start_of_a_whole_day(days: int, oldest_kept: str) -> None:
    """The horizon is the start of the UTC day `retention_days` before today: a reading
    is kept at least that many days, and a day goes as a whole."""
    assert horizon_us(NOW, days) == us(oldest_kept)
    # The same all day long, moving only at midnight UTC.
    assert horizon_us(day_start_us(TODAY), days) == horizon_us(day_start_us(TODAY + 1) - 1, days)
    assert horizon_us(day_start_us(TODAY + 1), days) == us(oldest_kept) + DAY_US


def test_a_negative_retention_is_refused() -> None:
    """The setting forbids it; the core refuses it too rather than keep the future."""
    with pytest.raises(ValueError, match="retention_days"):
        horizon_us(NOW, -1)


def test_without_partitions_only_the_horizon_is_planned() -> None:
    """SQLite (no partitions): nothing to create or drop, rows before the horizon go."""
    assert plan(NOW, 2, None) == RetentionPlan(us("2026-12-03T00:00:00"))
    assert plan(NOW, 0, None) == RetentionPlan(None)


def test_partitions_are_made_for_today_and_the_days_ahead() -> None:
    """Missing partitions of today and the next AHEAD_DAYS days are created, oldest
    first; those there already are not."""
    assert plan(NOW, 0, set()).create == tuple(range(TODAY, TODAY + AHEAD_DAYS + 1))
    assert plan(NOW, 0, {TODAY, TODAY + 2}).create == (TODAY + 1, TODAY + 3)
    assert plan(NOW, 0, set(range(TODAY, TODAY + 10))).create == ()


def test_past_days_are_never_created() -> None:
    """A past day without a partition stays without one (its rows are in DEFAULT)."""
    assert min(plan(NOW, 5, {TODAY - 3}).create) == TODAY


def test_partitions_wholly_before_the_horizon_are_dropped() -> None:
    """With 2 days kept, days before 2026-12-03 go, that day itself and later stay."""
    kept_from = day_of(us("2026-12-03T00:00:00"))
    existing = set(range(kept_from - 4, TODAY + AHEAD_DAYS + 1)) | {-20_000}
    result = plan(NOW, 2, existing)
    assert result.drop == (-20_000, *range(kept_from - 4, kept_from))
    assert result.create == ()
    assert result.horizon_us == day_start_us(kept_from)
