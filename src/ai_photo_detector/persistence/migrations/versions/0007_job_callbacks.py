"""Jobs may carry a webhook: its target and delivery state, and every attempt made.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_url", sa.String(2048)))
        batch.add_column(sa.Column("callback_status", sa.String(16)))
        batch.add_column(sa.Column("callback_next_at", sa.DateTime(timezone=True)))
        batch.create_index("ix_jobs_callback_due", ["callback_status", "callback_next_at"])
    op.create_table(
        "callback_attempts",
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.String(500)),
        sa.Column("duration_ms", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("callback_attempts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_callback_due")
        batch.drop_column("callback_next_at")
        batch.drop_column("callback_status")
        batch.drop_column("callback_url")
