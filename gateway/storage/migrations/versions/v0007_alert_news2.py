"""NEWS2 on alerts: the patient's score, band and completeness when the alert changed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

- `alerts.news2_score`, `alerts.news2_band`, `alerts.news2_complete`: null on every
  existing alert (no score was kept when they changed).

Frozen like 0001: names and numbers are spelled out here, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("news2_score", sa.Integer))
        batch.add_column(sa.Column("news2_band", sa.String(16)))
        batch.add_column(sa.Column("news2_complete", sa.Boolean))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("news2_complete")
        batch.drop_column("news2_band")
        batch.drop_column("news2_score")
