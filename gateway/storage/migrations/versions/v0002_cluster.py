"""What several replicas on one database coordinate through.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05

- `devices.conn_epoch` (a stream's fencing token) and `devices.last_seen_us`;
- `counters`: `event_id` and `alert_id`, started at the highest stored ids;
- `replicas` (heartbeats, epochs, rules versions) and `patient_owners`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("conn_epoch", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_seen_us", sa.BigInteger))
    op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO counters (name, value) VALUES"
        " ('event_id', (SELECT COALESCE(MAX(event_id), 0) FROM alert_events)),"
        " ('alert_id', (SELECT COALESCE(MAX(id), 0) FROM alerts))"
    )
    op.create_table(
        "replicas",
        sa.Column("replica_id", sa.String(128), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False, server_default=""),
    )
    op.create_table(
        "patient_owners",
        sa.Column("patient_id", sa.String(64), primary_key=True),
        sa.Column("replica_id", sa.String(128), nullable=False, index=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("claimed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("patient_owners")
    op.drop_table("replicas")
    op.drop_table("counters")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_seen_us")
        batch.drop_column("conn_epoch")
