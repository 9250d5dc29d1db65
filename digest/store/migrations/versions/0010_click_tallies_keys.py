"""Click counts that keep no reader: requests that never count become tallies per
(edition, article, reason) instead of one row each, and the clients of an edition's clicks
are hashed with a random key of that edition (click_keys), deleted when counting closes;
a click the limit rule takes back keeps when (uncounted_at), for the rankings before.

Rows of older stores were hashed with a key derived from the long-lived secret: their
uncounted rows become tallies and the clients of the rest are blanked.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "click_tallies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("edition_id", sa.Integer(), sa.ForeignKey("editions.id"), nullable=False),
        sa.Column("article_id", sa.Integer(), sa.ForeignKey("articles.id"), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.UniqueConstraint("edition_id", "article_id", "reason"),
    )
    op.create_table(
        "click_keys",
        sa.Column("edition_id", sa.Integer(), sa.ForeignKey("editions.id"),
                  primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("clicks") as batch:
        batch.add_column(sa.Column("uncounted_at", sa.DateTime(), nullable=True))
    op.execute("INSERT INTO click_tallies (edition_id, article_id, reason, requests) "
               "SELECT edition_id, article_id, reason, count(*) FROM clicks "
               "WHERE NOT counted GROUP BY edition_id, article_id, reason")
    op.execute("DELETE FROM clicks WHERE NOT counted")
    op.execute("UPDATE clicks SET client = ''")


def downgrade() -> None:
    with op.batch_alter_table("clicks") as batch:
        batch.drop_column("uncounted_at")
    op.drop_table("click_keys")
    op.drop_table("click_tallies")
