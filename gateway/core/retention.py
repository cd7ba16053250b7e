"""Retention of readings, decided sans-I/O: where the retention horizon is, and which
days' partitions to drop or create.

Readings go a whole UTC day at a time. With `retention_days = N` the oldest day kept
is the one N days before today, so every reading is kept at least N x 24 h and at most
a day longer; 0 keeps everything. Queries hide what is older than the horizon at once
(`storage/queries.py`), so a day being deleted is never seen in part. `plan` is the
maintenance's one decision; the retention service (`services/retention.py`) acts on it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["AHEAD_DAYS", "DAY_US", "RetentionPlan", "day_of", "day_start_us", "horizon_us", "plan"]

DAY_US = 86_400 * 1_000_000

# Days after today whose partitions exist beforehand: the maintenance runs hourly, so a
# day's partition is there long before its first reading, even if a few runs fail.
AHEAD_DAYS = 3


def day_of(ts_us: int) -> int:
    """The UTC day of a timestamp (microseconds since the epoch), as days since the epoch."""
    return ts_us // DAY_US  # floor: before 1970 too


def day_start_us(day: int) -> int:
    return day * DAY_US


def horizon_us(now_us: int, retention_days: int) -> int | None:
    """The start of the oldest UTC day kept; readings before it are gone (or going).
    None when everything is kept (`retention_days` 0)."""
    if retention_days < 0:
        raise ValueError("retention_days must be >= 0")
    if retention_days == 0:
        return None
    return day_start_us(day_of(now_us) - retention_days)


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What one maintenance run does: partitions to create and drop (days, oldest
    first), and the horizon below which leftover rows are deleted (None: keep all)."""

    horizon_us: int | None
    create: tuple[int, ...] = ()
    drop: tuple[int, ...] = ()


def plan(
    now_us: int,
    retention_days: int,
    partitions: Collection[int] | None,
    ahead_days: int = AHEAD_DAYS,
) -> RetentionPlan:
    """The run for `now_us`, given the days that have a partition (None: readings are
    one table, as on SQLite: nothing to create or drop, only rows to delete).

    Only today and later days are created: a past day's readings may already sit in the
    DEFAULT partition, and a partition made for them would have to take them over.
    Past days whose partitions were dropped are never made again.
    """
    horizon = horizon_us(now_us, retention_days)
    if partitions is None:
        return RetentionPlan(horizon)
    today = day_of(now_us)
    create = tuple(d for d in range(today, today + ahead_days + 1) if d not in partitions)
    drop: tuple[int, ...] = ()
    if horizon is not None:
        # A partition goes once its whole day is before the horizon.
        drop = tuple(sorted(d for d in partitions if day_start_us(d + 1) <= horizon))
    return RetentionPlan(horizon, create, drop)
