"""The cluster's alert rules: one row every replica applies.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

- `rules`: the rules file's text and version, when (database clock) and by which
  replica they were set. A start or reload on any replica rewrites it; the others
  follow (services/rules_sync.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("set_at", sa.Float, nullable=False),
        sa.Column("set_by", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rules")
