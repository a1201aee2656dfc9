"""audit Merkle tree: stored subtree roots, the head's frontier, signed tree heads

Revision ID: a61f3c9e2d05
Revises: 3f9a2c7e5b10
Create Date: 2026-12-01 14:30:00

The frontier stays NULL here: the gateway builds the tree from the stored digests on its next
start (audit.ensure_tree) and signs the tree head of every earlier checkpoint.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "a61f3c9e2d05"
down_revision: str | None = "3f9a2c7e5b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_tree_node",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    with op.batch_alter_table("audit_head") as batch:
        batch.add_column(sa.Column("frontier", sa.Text(), nullable=True))
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.add_column(
            sa.Column("root", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch.add_column(sa.Column("timestamp", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("tree_signature", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoint") as batch:
        batch.drop_column("tree_signature")
        batch.drop_column("timestamp")
        batch.drop_column("root")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("frontier")
    op.drop_table("audit_tree_node")
