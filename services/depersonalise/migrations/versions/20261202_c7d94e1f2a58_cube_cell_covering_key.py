"""The cube's primary key carries each cell's count and key sum (PostgreSQL: INCLUDE), so the
reads of a table and the lattice's probes of its breakdowns are index-only scans, never a visit
to the table's pages (SQLite's cube is WITHOUT ROWID: its key already holds the whole cell)

Revision ID: c7d94e1f2a58
Revises: a41c7e2b9f63
Create Date: 2026-12-02 01:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c7d94e1f2a58"
down_revision: str | None = "a41c7e2b9f63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "generation, dataset, layer, dim, fine, provider, at, area, value"


def _key(include: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # On the partitioned table: every generation's partition gets the same key.
    op.execute("ALTER TABLE cube_cell DROP CONSTRAINT pk_cube_cell")
    op.execute(f"ALTER TABLE cube_cell ADD CONSTRAINT pk_cube_cell PRIMARY KEY ({KEY}){include}")


def upgrade() -> None:
    _key(" INCLUDE (count, key_sum)")


def downgrade() -> None:
    _key("")
