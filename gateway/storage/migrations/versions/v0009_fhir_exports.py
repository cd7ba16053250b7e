"""FHIR Bulk Data exports: one row per `$export` job, so any replica answers it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

- `fhir_exports`: who asked, the wards covered, the snapshot (highest reading id at
  kick-off) and the files cut from it.

Frozen like 0001: names and numbers are spelled out here, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fhir_exports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("wards", sa.JSON, nullable=True),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("types", sa.String(64), nullable=False),
        sa.Column("since_us", sa.BigInteger, nullable=True),
        sa.Column("transaction_us", sa.BigInteger, nullable=False),
        sa.Column("snapshot", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("planned_to", sa.BigInteger, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("heartbeat_us", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("fhir_exports")
