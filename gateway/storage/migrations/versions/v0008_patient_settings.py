"""Per-patient settings: NEWS2's SpO2 scale and overrides of the ward's threshold rules.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

- `patient_settings`: one row per patient whose settings were ever set, replaced whole
  by `PUT /v1/patients/{id}/settings`; `overrides` is JSON by rule name.

Frozen like 0001: names and numbers are spelled out here, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_settings",
        sa.Column("patient_id", sa.String(64), primary_key=True),
        sa.Column("spo2_scale", sa.Integer, nullable=False),
        sa.Column("overrides", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("patient_settings")
