"""The review queue's leases and skips; predictions keep their provenance evidence.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("provenance", sa.JSON))
    op.create_table(
        "review_claims",
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_claims_expires_at", "review_claims", ["expires_at"])
    op.create_table(
        "review_skips",
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("reviewer", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The queue looks for primary predictions by band, newest window first.
    op.create_index(
        "ix_predictions_route_band_time", "predictions", ["route", "band", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_route_band_time", "predictions")
    op.drop_table("review_skips")
    op.drop_index("ix_review_claims_expires_at", "review_claims")
    op.drop_table("review_claims")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("provenance")
