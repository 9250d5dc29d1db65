"""Reports from the bounce mailbox that nothing ties to mail this store sent are held for
an editor (applied or dismissed by hand) instead of changing anyone.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("held_because", sa.String(500), nullable=False),
        sa.Column("claims", sa.Text(), nullable=False),
        sa.Column("unsubscribe", sa.String(320), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(500), nullable=False),
    )
    op.create_index("ix_held_reports_status", "held_reports", ["status"])


def downgrade() -> None:
    op.drop_index("ix_held_reports_status", "held_reports")
    op.drop_table("held_reports")
