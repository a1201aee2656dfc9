"""derived_record.occurred_on (grants' windows select records by it) and point_areas (the codes
of the published point, which records carry)

Revision ID: 5b7c1e9a04d2
Revises: d3e1d3a19fb3
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b7c1e9a04d2"
down_revision: str | None = "d3e1d3a19fb3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("derived_record") as batch:
        batch.add_column(sa.Column("occurred_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("point_areas", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("derived_record") as batch:
        batch.drop_column("point_areas")
        batch.drop_column("occurred_on")
