"""Subscribers removed before the suppression list existed keep their unkeyed address hash
in a column of its own, indexed: an import looks it up by equality for a whole batch of
addresses at once, where a LIKE 'removed:HASH%' on email_key scanned the table per row.

Rows of older stores whose email_key is "removed:HASH:…" get HASH (40 hex digits) there.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("removed_hash", sa.String(40), nullable=True))
        batch.create_index("ix_subscribers_removed_hash", ["removed_hash"])
    op.execute("UPDATE subscribers SET removed_hash = substr(email_key, 9, 40) "
               "WHERE email_key LIKE 'removed:%'")


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_index("ix_subscribers_removed_hash")
        batch.drop_column("removed_hash")
