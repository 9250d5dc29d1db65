"""What each article's topic was chosen by, with what confidence, its meaning as a vector,
and whether the editor pinned it; each source's ranking weight.

Articles stored before keep their topics (reason "before"), with no vector:
`digest articles retopic` gives them one.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("topic_reason", sa.String(16), nullable=False,
                                   server_default="before"))
        batch.add_column(sa.Column("topic_confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("weight", sa.Float(), nullable=False, server_default="1"))
