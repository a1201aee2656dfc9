"""The count cube (cube_cell, cube_person), record and person keys on derived_record, the
indexes per-record reads use; on PostgreSQL derived_record and the cube are partitioned by
generation (a rebuild's old generation is dropped as whole partitions)

Revision ID: a41c7e2b9f63
Revises: 8c2f4a6b1d37
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "a41c7e2b9f63"
down_revision: str | None = "8c2f4a6b1d37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = ["generation", "dataset", "layer", "dim", "fine", "provider", "at", "area", "value"]


def _cube_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    text = sqlmodel.sql.sqltypes.AutoString
    return [
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("dataset", text(length=64), nullable=False),
        sa.Column("layer", text(length=64), nullable=False),
        sa.Column("dim", text(length=100), nullable=False),
        sa.Column("fine", sa.Boolean(), nullable=False),
        sa.Column("provider", text(length=64), nullable=False),
        sa.Column("at", sa.Date(), nullable=False),
        sa.Column("area", text(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
    ]


def _partitioned() -> dict[str, Any]:
    """Cube tables: partitioned by generation on PostgreSQL, WITHOUT ROWID (stored in key
    order) on SQLite."""
    if op.get_bind().dialect.name == "postgresql":
        return {"postgresql_partition_by": "LIST (generation)"}
    return {"sqlite_with_rowid": False}


def _default_partition(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")


def _partition_derived_record() -> None:
    """PostgreSQL: derived_record becomes a table partitioned by generation (rows copied)."""
    op.execute("ALTER TABLE derived_record RENAME TO derived_record_unpartitioned")
    op.execute(
        "ALTER TABLE derived_record_unpartitioned "
        "RENAME CONSTRAINT derived_record_pkey TO derived_record_unpartitioned_pkey"
    )
    op.execute("ALTER INDEX ix_derived_dataset RENAME TO ix_derived_dataset_unpartitioned")
    op.execute(
        "CREATE TABLE derived_record (LIKE derived_record_unpartitioned INCLUDING DEFAULTS, "
        "PRIMARY KEY (generation, provider, id), "
        "CONSTRAINT uq_derived_record_key UNIQUE (generation, provider, record_key)) "
        "PARTITION BY LIST (generation)"
    )
    _default_partition("derived_record")
    op.execute("INSERT INTO derived_record SELECT * FROM derived_record_unpartitioned")
    op.execute("ALTER SEQUENCE derived_record_id_seq OWNED BY derived_record.id")
    op.execute("DROP TABLE derived_record_unpartitioned")


UNNAMED = {"uq": "uq_%(table_name)s_%(column_0_name)s"}  # names SQLite's unnamed constraint


def _unique_with_provider() -> None:
    """SQLite: (generation, record_key) becomes (generation, provider, record_key)."""
    with op.batch_alter_table("derived_record", naming_convention=UNNAMED) as batch:
        batch.drop_constraint("uq_derived_record_generation", type_="unique")
        batch.create_unique_constraint(
            "uq_derived_record_key", ["generation", "provider", "record_key"]
        )


def upgrade() -> None:
    # Records derived before this revision have no cube cells (their keys need the record-key
    # secret, which a migration does not hold): the first rebuild after it counts them
    # (README, "The count cube").
    with op.batch_alter_table("derived_record") as batch:
        batch.add_column(sa.Column("key", sa.SmallInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("person_key", sa.SmallInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _partition_derived_record()
        op.create_index(
            "ix_derived_dataset", "derived_record", ["generation", "dataset", "provider", "deleted"]
        )
    else:
        _unique_with_provider()
    # Keyset pages of one dataset in id order; cohort reads by person and by strand.
    op.create_index("ix_derived_page", "derived_record", ["generation", "dataset", "id"])
    op.create_index("ix_derived_person", "derived_record", ["generation", "dataset", "person"])
    op.create_index("ix_derived_category", "derived_record", ["generation", "dataset", "category"])
    op.create_table(
        "cube_cell",
        *_cube_columns(),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("key_sum", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name="pk_cube_cell"),
        **_partitioned(),
    )
    _default_partition("cube_cell")
    op.create_table(
        "cube_person",
        *_cube_columns(),
        sa.Column("person", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("person_key", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "person", name="pk_cube_person"),
        **_partitioned(),
    )
    _default_partition("cube_person")


def downgrade() -> None:
    op.drop_table("cube_person")
    op.drop_table("cube_cell")
    op.drop_index("ix_derived_category", "derived_record")
    op.drop_index("ix_derived_person", "derived_record")
    op.drop_index("ix_derived_page", "derived_record")
    with op.batch_alter_table("derived_record") as batch:
        batch.drop_constraint("uq_derived_record_key", type_="unique")
        batch.create_unique_constraint(None, ["generation", "record_key"])
        batch.drop_column("person_key")
        batch.drop_column("key")
