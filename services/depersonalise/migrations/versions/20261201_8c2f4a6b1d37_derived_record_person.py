"""derived_record.person (the depersonalise-only pseudonym), occurred_until and counted
(special-category values for aggregates), none of them ever published

Revision ID: 8c2f4a6b1d37
Revises: 5b7c1e9a04d2
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "8c2f4a6b1d37"
down_revision: str | None = "5b7c1e9a04d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("derived_record") as batch:
        batch.add_column(
            sa.Column("person", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch.add_column(sa.Column("occurred_until", sa.Date(), nullable=True))
        batch.add_column(sa.Column("counted", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("derived_record") as batch:
        batch.drop_column("counted")
        batch.drop_column("occurred_until")
        batch.drop_column("person")
