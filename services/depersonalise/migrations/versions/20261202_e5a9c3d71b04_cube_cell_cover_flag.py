"""Each total cell keeps whether its row lacks a cover in some breakdown, and at which threshold
that was found (cover_flags.py), so that a table's read takes it with the total instead of
probing the breakdowns; on PostgreSQL the cube's key INCLUDEs both, so the read stays an
index-only scan. Cells written before this revision have no flag: reads probe their rows, as
before, until the rows change or a rebuild counts the cube again

Revision ID: e5a9c3d71b04
Revises: c7d94e1f2a58
Create Date: 2026-12-02 06:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5a9c3d71b04"
down_revision: str | None = "c7d94e1f2a58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "generation, dataset, layer, dim, fine, provider, at, area, value"


def _key(include: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # On the partitioned table: every generation's partition gets the same key.
    op.execute("ALTER TABLE cube_cell DROP CONSTRAINT pk_cube_cell")
    op.execute(f"ALTER TABLE cube_cell ADD CONSTRAINT pk_cube_cell PRIMARY KEY ({KEY}) {include}")


def upgrade() -> None:
    op.add_column("cube_cell", sa.Column("uncovered", sa.Boolean(), nullable=True))
    op.add_column("cube_cell", sa.Column("uncovered_for", sa.SmallInteger(), nullable=True))
    _key("INCLUDE (count, key_sum, uncovered, uncovered_for)")


def downgrade() -> None:
    _key("INCLUDE (count, key_sum)")
    op.drop_column("cube_cell", "uncovered_for")
    op.drop_column("cube_cell", "uncovered")
