"""Readings range-partitioned by UTC day on PostgreSQL, so retention drops whole days.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

PostgreSQL: `readings` becomes a table partitioned by RANGE (ts_us), one partition per
UTC day (`readings_pYYYYMMDD`, [day start, next day start)) and a DEFAULT partition
(`readings_default`) for timestamps no day partition takes, such as a device clock far
off: no reading is ever refused for its time. Its primary key is (id, ts_us), since a
partitioned table's key must hold the partition key; `id` keeps its sequence (the same
one, so ids go on from where they were). Existing rows are copied: each UTC day that
holds rows from _DAYS_BACK days before today on gets its own partition, as do today
and the next _AHEAD_DAYS; older or odder rows go to the DEFAULT partition, where
retention deletes them row by row. The copy rewrites the table inside the migration's
transaction (ingest waits: upgrade while the gateway is stopped, or expect a pause).

SQLite: nothing changes; retention deletes rows there.

Frozen like 0001: names and numbers are spelled out here, never imported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DAY_US = 86_400 * 1_000_000
_AHEAD_DAYS = 3
# Days with rows this far back get partitions of their own: a year and a bit of
# history, a few hundred partitions at most, however odd the clocks that wrote them.
_DAYS_BACK = 400

_COLUMNS = "id, device_id, patient_id, metric, ts_us, value, received_us, seq"
_INDEXES = {
    "ix_readings_patient_metric_ts": "patient_id, metric, ts_us, id",
    "ix_readings_patient_ts": "patient_id, ts_us, id",
}


def _partition_name(day: int) -> str:
    return "readings_p" + datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y%m%d")


def _is_partitioned(bind: sa.Connection) -> bool:
    kind = bind.scalar(
        sa.text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass('readings')")
    )
    return bool(kind == "p")


def _sequence(table: str) -> str:
    bind = op.get_bind()
    name = bind.scalar(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
    if name is None:
        raise RuntimeError(f"{table}.id has no sequence")
    return str(name)


def _set_aside(old: str) -> str:
    """Rename `readings` to `old` and free the names the new table takes (its key, its
    indexes, its sequence's owner); the sequence's name."""
    op.execute(f"ALTER TABLE readings RENAME TO {old}")
    sequence = _sequence(old)
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    key = op.get_bind().scalar(
        sa.text(
            "SELECT conname FROM pg_constraint"
            f" WHERE conrelid = '{old}'::regclass AND contype = 'p'"
        )
    )
    if key is not None:
        op.execute(f"ALTER TABLE {old} DROP CONSTRAINT {key}")
    for index in _INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {index}")
    return sequence


def _create_table(sequence: str, partitioned: bool) -> None:
    op.execute(
        f"""CREATE TABLE readings (
            id BIGINT NOT NULL DEFAULT nextval('{sequence}'),
            device_id VARCHAR(64) NOT NULL,
            patient_id VARCHAR(64) NOT NULL,
            metric VARCHAR(16) NOT NULL,
            ts_us BIGINT NOT NULL,
            value FLOAT NOT NULL,
            received_us BIGINT NOT NULL,
            seq BIGINT NOT NULL
        ){" PARTITION BY RANGE (ts_us)" if partitioned else ""}"""
    )


def _finish_table(old: str, sequence: str, key: str) -> None:
    """Rows copied from `old`, then the key, the indexes (faster after the copy), the
    sequence's owner; `old` dropped."""
    op.execute(f"INSERT INTO readings ({_COLUMNS}) SELECT {_COLUMNS} FROM {old}")
    op.execute(f"ALTER TABLE readings ADD CONSTRAINT readings_pkey PRIMARY KEY ({key})")
    for index, columns in _INDEXES.items():
        op.execute(f"CREATE INDEX {index} ON readings ({columns})")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY readings.id")
    op.execute(f"DROP TABLE {old}")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or _is_partitioned(bind):
        return
    old = "readings_unpartitioned"
    sequence = _set_aside(old)
    _create_table(sequence, partitioned=True)
    op.execute("CREATE TABLE readings_default PARTITION OF readings DEFAULT")
    today = int(time.time()) // 86_400
    # Floor division by the day (PostgreSQL's `/` truncates toward zero).
    held = bind.scalars(
        sa.text(
            f"SELECT DISTINCT (ts_us - ((ts_us % {_DAY_US}) + {_DAY_US}) % {_DAY_US})"
            f" / {_DAY_US} FROM {old}"
            f" WHERE ts_us >= {(today - _DAYS_BACK) * _DAY_US}"
            f" AND ts_us < {(today + _AHEAD_DAYS + 1) * _DAY_US}"
        )
    ).all()
    for day in sorted({int(d) for d in held} | set(range(today, today + _AHEAD_DAYS + 1))):
        op.execute(
            f"CREATE TABLE {_partition_name(day)} PARTITION OF readings"
            f" FOR VALUES FROM ({day * _DAY_US}) TO ({(day + 1) * _DAY_US})"
        )
    _finish_table(old, sequence, "id, ts_us")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _is_partitioned(bind):
        return
    old = "readings_partitioned"
    sequence = _set_aside(old)  # its partitions are dropped with it
    _create_table(sequence, partitioned=False)
    _finish_table(old, sequence, "id")
