"""Bounce events, the suppression list, the bounce score and the consent record.

Unsubscribed, bounced and removed subscribers of older stores go onto the suppression
list (removed ones were already only a hash, which stays on their row).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("bounce_score", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("last_bounce_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("consent_source", sa.String(300), nullable=True))
        batch.add_column(sa.Column("consent_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("consent_ip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(), nullable=True))
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email_key", sa.String(320), nullable=False, unique=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subscriber_id", sa.Integer(), sa.ForeignKey("subscribers.id"),
                  nullable=True),
        sa.Column("edition_id", sa.Integer(), sa.ForeignKey("editions.id"), nullable=True),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_bounce_events_subscriber_id", "bounce_events", ["subscriber_id"])
    op.create_index("ix_bounce_events_recorded_at", "bounce_events", ["recorded_at"])
    op.execute(
        "insert into suppressions (email_key, reason, source, created_at) "
        "select email_key, case status when 'unsubscribed' then 'unsubscribed' "
        "else 'hard-bounced' end, 'before suppressions', updated_at from subscribers "
        "where status in ('unsubscribed', 'bounced')")


def downgrade() -> None:
    op.drop_index("ix_bounce_events_recorded_at", "bounce_events")
    op.drop_index("ix_bounce_events_subscriber_id", "bounce_events")
    op.drop_table("bounce_events")
    op.drop_table("suppressions")
    with op.batch_alter_table("subscribers") as batch:
        for column in ("confirmed_at", "consent_ip", "consent_at", "consent_source",
                       "last_bounce_at", "bounce_score"):
            batch.drop_column(column)
