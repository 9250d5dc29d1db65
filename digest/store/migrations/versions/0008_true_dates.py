"""Where each article's date came from (the record, its page, its text, or only when it
was imported: undated), whether a date in the future was clamped, and whether it came in
too old to be news (kept for de-duplication, offered to no edition unless an editor adds
it).

Articles stored before keep their dates as "record" (that is where every date came from).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("date_source", sa.String(8), nullable=False,
                                   server_default="record"))
        batch.add_column(sa.Column("date_clamped", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("too_old", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.execute("UPDATE articles SET date_source = 'imported' WHERE published_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("too_old")
        batch.drop_column("date_clamped")
        batch.drop_column("date_source")
