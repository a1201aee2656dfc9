"""link review conflicts and linkage key fingerprints: a reason per review item, no match
weight for conflicts; the fingerprints of the linkage keys ingest has run with

Revision ID: 3f1c2a7d9b10
Revises: e7b6d07ff3fc
Create Date: 2026-12-01 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "3f1c2a7d9b10"
down_revision: str | None = "e7b6d07ff3fc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("link_review", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reason",
                sqlmodel.sql.sqltypes.AutoString(length=10),
                server_default="weight",
                nullable=False,
            )
        )
        batch_op.alter_column("match_weight", existing_type=sa.Float(), nullable=True)
    op.create_table(
        "linkage_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("since", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )


def downgrade() -> None:
    op.drop_table("linkage_key")
    op.execute("DELETE FROM link_review WHERE match_weight IS NULL")
    with op.batch_alter_table("link_review", schema=None) as batch_op:
        batch_op.alter_column("match_weight", existing_type=sa.Float(), nullable=False)
        batch_op.drop_column("reason")
