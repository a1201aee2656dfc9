"""link review conflicts: a reason per review item, no match weight for conflicts

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


def downgrade() -> None:
    op.execute("DELETE FROM link_review WHERE match_weight IS NULL")
    with op.batch_alter_table("link_review", schema=None) as batch_op:
        batch_op.alter_column("match_weight", existing_type=sa.Float(), nullable=False)
        batch_op.drop_column("reason")
