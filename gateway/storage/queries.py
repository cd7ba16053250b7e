"""The read side of readings: keyset pages, bounded streaming, summaries, latest values.

SQLAlchemy Core only and nothing dialect-specific, so PostgreSQL runs the same SQL as
SQLite. Every query starts with an equality on patient (a device's query on its
patient's), then a range on `ts_us`, so it is served by one of the indexes declared in
`schema.py`.

With `retention_days` set, every query starts at the retention horizon, the start of
the oldest day kept (`core/retention.py`), read from the clock at each query: a day
that falls out disappears from every answer at once, while its rows are still being
deleted (SQLite, in batches) or its partition waits for the next run (PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import BigInteger

from gateway.core.retention import horizon_us
from gateway.storage.schema import Device, Reading, table_of
from schemas.metrics import Metric

__all__ = [
    "Bucket",
    "LatestReading",
    "Position",
    "ReadingFilter",
    "ReadingPage",
    "ReadingQueries",
    "StoredReading",
]

_r = table_of(Reading).c
_devices = table_of(Device).c

# Rows fetched per round trip by `iter_all`: the most a CSV export holds in memory.
STREAM_PAGE = 5000


@dataclass(frozen=True, slots=True)
class ReadingFilter:
    """Which readings: exactly one of patient or device, optionally one metric, and a
    half-open time range `[since_us, until_us)` in microseconds since the epoch."""

    patient_id: str | None = None
    device_id: str | None = None
    metric: Metric | None = None
    since_us: int | None = None
    until_us: int | None = None

    def __post_init__(self) -> None:
        if (self.patient_id is None) == (self.device_id is None):
            raise ValueError("exactly one of patient_id and device_id")


class Position(NamedTuple):
    """The last reading already returned, in (ts_us, id) order."""

    ts_us: int
    id: int


class StoredReading(NamedTuple):
    """A stored reading as the queries return it (the stored row is `core.rows.ReadingRow`)."""

    id: int
    device_id: str
    patient_id: str
    metric: str
    ts_us: int
    value: float


@dataclass(frozen=True, slots=True)
class ReadingPage:
    rows: list[StoredReading]
    more: bool  # readings remain after the last row (within the same snapshot)


@dataclass(frozen=True, slots=True)
class Bucket:
    start_us: int
    count: int
    min: float
    max: float
    mean: float


class LatestReading(NamedTuple):
    metric: Metric
    value: float
    ts_us: int
    device_id: str


def _where(filters: ReadingFilter, horizon: int | None) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if filters.patient_id is not None:
        clauses.append(_r.patient_id == filters.patient_id)
    if filters.device_id is not None:
        if filters.patient_id is None:
            # The device's patient leads to the index (see the readings table in schema).
            patient = select(_devices.patient_id).where(_devices.id == filters.device_id)
            clauses.append(_r.patient_id == patient.scalar_subquery())
        clauses.append(_r.device_id == filters.device_id)
    if filters.metric is not None:
        clauses.append(_r.metric == filters.metric.value)
    if filters.since_us is not None:
        clauses.append(_r.ts_us >= filters.since_us)
    if filters.until_us is not None:
        clauses.append(_r.ts_us < filters.until_us)
    if horizon is not None and (filters.since_us is None or filters.since_us < horizon):
        clauses.append(_r.ts_us >= horizon)
    return clauses


def _page_query(
    filters: ReadingFilter,
    after: Position | None,
    limit: int,
    snapshot: int,
    horizon: int | None = None,
) -> Select[Any]:
    # `id <= snapshot` hides rows committed after paging began, even those whose
    # timestamps land behind the cursor. Sound where ids grow in commit order (SQLite's
    # single writer); on PostgreSQL a transaction that commits late with a lower id can
    # still slip in once (never twice).
    clauses = [*_where(filters, horizon), _r.id <= snapshot]
    if after is not None:
        # `ts_us >= t` is the index range; the OR only trims rows with equal timestamps.
        clauses.append(and_(_r.ts_us >= after.ts_us, or_(_r.ts_us > after.ts_us, _r.id > after.id)))
    return (
        select(_r.id, _r.device_id, _r.patient_id, _r.metric, _r.ts_us, _r.value)
        .where(*clauses)
        .order_by(_r.ts_us, _r.id)
        .limit(limit)
    )


def _summary_query(
    filters: ReadingFilter, bucket_us: int, limit: int, horizon: int | None
) -> Select[Any]:
    size = literal(bucket_us, BigInteger)
    # Floor to a multiple of the bucket with integer arithmetic only: `%` truncates
    # toward zero on both backends, so `(x % b + b) % b` is the floor remainder
    # (correct before 1970 too), and no division result type is left to the dialect.
    start = (_r.ts_us - (_r.ts_us % size + size) % size).label("start_us")
    # Grouping by the inner query's column, not the expression: PostgreSQL does not
    # see two copies of an expression with bound parameters as the same expression.
    inner = select(start, _r.value).where(*_where(filters, horizon)).subquery()
    return (
        select(
            inner.c.start_us,
            func.count(),
            func.min(inner.c.value),
            func.max(inner.c.value),
            func.avg(inner.c.value),
        )
        .group_by(inner.c.start_us)
        .order_by(inner.c.start_us)
        .limit(limit)
    )


class ReadingQueries:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retention_days: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`retention_days` (0: all) and `clock` (seconds since the epoch) place the
        horizon every query starts at."""
        self._engine = engine
        self._retention_days = retention_days
        self._clock = clock

    def horizon_us(self) -> int | None:
        """The start of the oldest day readings are shown from now (None: all days)."""
        return horizon_us(int(self._clock() * 1_000_000), self._retention_days)

    async def max_id(self) -> int:
        """The snapshot bound: the highest reading id now committed (0 for none)."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(func.max(_r.id)))
        return int(value) if value is not None else 0

    async def page(
        self, filters: ReadingFilter, after: Position | None, limit: int, snapshot: int
    ) -> ReadingPage:
        """Up to `limit` readings after `after`, among those with id <= `snapshot`."""
        async with self._engine.connect() as conn:
            query = _page_query(filters, after, limit + 1, snapshot, self.horizon_us())
            result = await conn.execute(query)
            rows = [StoredReading(*r) for r in result]
        return ReadingPage(rows[:limit], more=len(rows) > limit)

    async def iter_all(
        self, filters: ReadingFilter, page_size: int = STREAM_PAGE
    ) -> AsyncGenerator[list[StoredReading]]:
        """Every matching reading that exists now, in order, `page_size` rows at a time.

        Each page is its own short read, so a slow consumer holds no connection and no
        read transaction between pages.
        """
        snapshot = await self.max_id()
        after: Position | None = None
        while True:
            page = await self.page(filters, after, page_size, snapshot)
            if page.rows:
                yield page.rows
            if not page.more:
                return
            last = page.rows[-1]
            after = Position(last.ts_us, last.id)

    async def summary(
        self, filters: ReadingFilter, bucket_us: int, max_buckets: int
    ) -> list[Bucket]:
        """Non-empty buckets aligned to multiples of `bucket_us` since the epoch, in order.

        Returns at most `max_buckets + 1` buckets, so the caller can tell when the
        range needs more than `max_buckets`.
        """
        query = _summary_query(filters, bucket_us, max_buckets + 1, self.horizon_us())
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [
                Bucket(int(s), int(n), float(lo), float(hi), float(mean))
                for s, n, lo, hi, mean in result
            ]

    async def latest(self, patient_id: str) -> list[LatestReading] | None:
        """The latest reading of each metric (by timestamp, ties to the highest id).

        None when the patient has neither readings nor a device (not even a revoked one).
        """
        found: list[LatestReading] = []
        horizon = self.horizon_us()
        kept = [] if horizon is None else [_r.ts_us >= horizon]
        async with self._engine.connect() as conn:
            # One index seek per metric on (patient_id, metric, ts_us, id): cheaper than
            # a window function that would scan the patient's whole history.
            for metric in Metric:
                row = (
                    await conn.execute(
                        select(_r.value, _r.ts_us, _r.device_id)
                        .where(_r.patient_id == patient_id, _r.metric == metric.value, *kept)
                        .order_by(_r.ts_us.desc(), _r.id.desc())
                        .limit(1)
                    )
                ).first()
                if row is not None:
                    found.append(LatestReading(metric, row.value, row.ts_us, row.device_id))
            if found:
                return found
            device = await conn.scalar(
                select(_devices.id).where(_devices.patient_id == patient_id).limit(1)
            )
        return found if device is not None else None
