"""The schema as it was when migrations began, and the adoption of databases made
before them.

Revision ID: 0001
Revises:
Create Date: 2026-12-05

The tables are a frozen copy of `storage/schema.py` at this revision (never import the
models here: they move on, this revision must not). `upgrade` is what `upgrade_schema`
did before migrations existed, so it serves both an empty database and one made by an
earlier gateway (tables, no `alembic_version`): tables that are missing are created,
columns added to existing tables since are added, retired indexes dropped; rows stay.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid); elsewhere 64 bits.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_TIME = sa.DateTime(timezone=True)

# Public: tests build "a database made by today's code" from it.
SCHEMA = sa.MetaData()

sa.Table(
    "devices",
    SCHEMA,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("patient_id", sa.String(64), nullable=False, index=True),
    sa.Column("ward", sa.String(64), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("revoked_at", _TIME),
    sa.Column("revoked_by", sa.String(64)),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)
sa.Table(
    "users",
    SCHEMA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("wards", sa.JSON, nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("revoked_at", _TIME),
)
sa.Table(
    "readings",
    SCHEMA,
    sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("patient_id", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(16), nullable=False),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("received_us", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index("ix_readings_patient_metric_ts", "patient_id", "metric", "ts_us", "id"),
    sa.Index("ix_readings_patient_ts", "patient_id", "ts_us", "id"),
)
sa.Table(
    "alerts",
    SCHEMA,
    sa.Column("id", _BIG_ID, primary_key=True, autoincrement=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("metric", sa.String(16)),
    sa.Column("priority", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("patient_id", sa.String(64), nullable=False, index=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("ward", sa.String(64), nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("direction", sa.String(8)),
    sa.Column("first_value", sa.Float),
    sa.Column("last_value", sa.Float),
    sa.Column("worst_value", sa.Float),
    sa.Column("raised_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("cleared_at", sa.Float),
    sa.Column("acked_at", sa.Float),
    sa.Column("acked_by", sa.String(64)),
    sa.Column("closed_by", sa.String(64)),
    sa.Column("closed_reason", sa.String(32)),
    sa.Column("last_event_id", sa.BigInteger, nullable=False, index=True),
)
sa.Table(
    "alert_events",
    SCHEMA,
    sa.Column("event_id", _BIG_ID, primary_key=True, autoincrement=False),
    sa.Column("alert_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("ward", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)
sa.Table(
    "sessions",
    SCHEMA,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("expires_at", _TIME, nullable=False, index=True),
)
sa.Table(
    "readiness_probe",
    SCHEMA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Float, nullable=False),
)
sa.Table(
    "audit_log",
    SCHEMA,
    sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("at", _TIME, nullable=False, index=True),
    sa.Column("actor", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False, index=True),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

# Nullable columns that gateways before migrations added to their existing tables on
# start (`create_all` adds tables only), as (table, column).
ADDED_COLUMNS = (
    ("alerts", "closed_by"),
    ("alerts", "closed_reason"),
    ("devices", "revoked_by"),
)

# An index earlier gateways created: it cost every insert a random page write.
RETIRED_INDEXES = ("ix_readings_device_ts",)


def upgrade() -> None:
    bind = op.get_bind()
    # checkfirst: a database made before migrations keeps the tables it has.
    SCHEMA.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table, column in ADDED_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, SCHEMA.tables[table].c[column].type))
    for name in RETIRED_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def downgrade() -> None:
    SCHEMA.drop_all(op.get_bind())
