"""Predictions keep the model's own label beside the answered one (a C2PA policy may differ).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("model_label", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("model_label")
