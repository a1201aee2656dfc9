"""key scopes, holder, expiry and origin

Revision ID: 3b8f0c2a9d41
Revises: 6c5e8e1da757
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "3b8f0c2a9d41"
down_revision: str | None = "6c5e8e1da757"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(
            sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch.add_column(
            sa.Column("scopes", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("origin")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
        batch.drop_column("holder")
