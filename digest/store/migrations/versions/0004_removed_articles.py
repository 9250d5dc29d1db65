"""A removed article stays as a tombstone (removed_at set): never in an edition again,
still known to de-duplication, so a re-import or a feed's next fetch does not bring it
back as new.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # Tombstones were removed articles: going back to a schema without them deletes them
    # (the older code would show them again as new).
    op.execute("delete from article_sources where article_id in "
               "(select id from articles where removed_at is not null)")
    op.execute("delete from articles where removed_at is not null")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("removed_at")
