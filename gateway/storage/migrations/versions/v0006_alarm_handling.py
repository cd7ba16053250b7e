"""Alarm handling: an alert's label, its last silence and how often it was escalated.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

- `alerts.label`: the rule's label when the alert was raised. Existing alerts get
  their rule's name, and "Device offline" for the technical alarm (the shipped rules
  had no labels before).
- `alerts.silenced_until`, `alerts.silenced_by`: the last silence (null: none).
- `alerts.escalation`: times escalated, 0 for every existing alert.

Frozen like 0001: names and numbers are spelled out here, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
# Another branch adds 0005; whoever merges both chains this one after it.
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("label", sa.String(64)))
        batch.add_column(sa.Column("silenced_until", sa.Float))
        batch.add_column(sa.Column("silenced_by", sa.String(64)))
        batch.add_column(sa.Column("escalation", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE alerts SET label = CASE WHEN rule = 'device-offline' "
        "THEN 'Device offline' ELSE rule END"
    )


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("escalation")
        batch.drop_column("silenced_by")
        batch.drop_column("silenced_until")
        batch.drop_column("label")
