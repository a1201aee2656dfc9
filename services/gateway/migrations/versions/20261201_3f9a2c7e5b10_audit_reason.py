"""audit_entry.reason: the CSP-Reason of a case-view read

Revision ID: 3f9a2c7e5b10
Revises: 7d2e5a1c4b90
Create Date: 2026-12-01 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "3f9a2c7e5b10"
down_revision: str | None = "7d2e5a1c4b90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_entry") as batch:
        batch.add_column(
            sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_entry") as batch:
        batch.drop_column("reason")
