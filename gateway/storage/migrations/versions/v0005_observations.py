"""Clinicians' observations for NEWS2: consciousness (ACVPU) and supplemental oxygen.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10

- `observations`: one row per entry by a clinician (`POST /v1/patients/{id}/observations`),
  never updated; the NEWS2 score takes each patient's latest consciousness and oxygen.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "observations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("consciousness", sa.String(1), nullable=True),
        sa.Column("oxygen", sa.Boolean, nullable=True),
        sa.Column("recorded_by", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_observations_patient_ts", "observations", ["patient_id", "ts_us", "id"])


def downgrade() -> None:
    op.drop_index("ix_observations_patient_ts", table_name="observations")
    op.drop_table("observations")
