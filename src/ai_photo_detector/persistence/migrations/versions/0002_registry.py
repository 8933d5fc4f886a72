"""Registry audit log; shadow predictions point at the primary prediction they mirror.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("previous_version", sa.String(64)),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_registry_events_created_at", "registry_events", ["created_at"])
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("paired_id", sa.String(32)))
        batch.create_index("ix_predictions_paired_id", ["paired_id"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("ix_predictions_paired_id")
        batch.drop_column("paired_id")
    op.drop_table("registry_events")
