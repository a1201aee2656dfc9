"""The national deployment's Citus placement (deploy/README.md, National scale), checked
statically against Citus's rules for distributed tables: no Citus runs here.

Rules (Citus documentation, "Distributing tables" and "Table management"): a distributed table's
primary key and every unique constraint include its distribution column; co-located tables share
the distribution column's type; the column should never be null; a foreign key from a distributed
table points at a reference table or at a co-located table through the distribution column; and
every table of the service is placed (distributed, reference, or local on the coordinator).

The runbook's command: ``CSP_TEST_DATABASE=postgresql .venv/bin/python -m pytest
tests/deploy/test_citus.py tests/depersonalise/test_cube_plans.py -q`` (on SQLite the keys made
by the PostgreSQL migration are skipped).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect

from services.depersonalise.models import Base
from shared.db import make_engine, prepare_schema
from tests.conftest import REPO, create_pg_database, drop_pg_database, using_postgres

RUNBOOK = (REPO / "deploy" / "README.md").read_text()
SQL = "\n".join(re.findall(r"```sql\n(.*?)```", RUNBOOK, flags=re.S))
DISTRIBUTED = {
    table: column
    for table, column in re.findall(r"create_distributed_table\('(\w+)', '(\w+)'", SQL)
}
COLOCATED = dict(
    re.findall(r"create_distributed_table\('(\w+)', '\w+', colocate_with => '(\w+)'", SQL)
)
REFERENCE = set(re.findall(r"create_reference_table\('(\w+)'\)", SQL))
LOCAL = set(re.findall(r"-- local: (\w+)", SQL))
TABLES = Base.metadata.tables


def test_the_runbook_places_every_table_once() -> None:
    assert DISTRIBUTED == {
        "derived_record": "provider",
        "cube_cell": "provider",
        "cube_person": "provider",
    }
    placed = [*DISTRIBUTED, *REFERENCE, *LOCAL]
    assert len(placed) == len(set(placed))
    assert set(TABLES) == set(placed) - {"alembic_version"}


def test_distribution_columns_exist_are_never_null_and_share_one_type() -> None:
    kinds = set()
    for table, column in DISTRIBUTED.items():
        found = TABLES[table].c[column]
        assert not found.nullable, f"{table}.{column} may be null"
        kinds.add(repr(found.type))
    assert len(kinds) == 1, kinds
    for table, partner in COLOCATED.items():
        assert partner in DISTRIBUTED and DISTRIBUTED[partner] == DISTRIBUTED[table]


def test_unique_constraints_of_distributed_tables_include_the_distribution_column() -> None:
    for table, column in DISTRIBUTED.items():
        uniques = [
            c
            for c in TABLES[table].constraints
            if c.__class__.__name__ in ("UniqueConstraint", "PrimaryKeyConstraint")
        ]
        uniques += [i for i in TABLES[table].indexes if i.unique]
        # A surrogate id key is SQLite's: PostgreSQL's key (with the column) is checked below.
        uniques = [u for u in uniques if [c.name for c in u.columns] != ["id"]]
        assert uniques, table
        for unique in uniques:
            assert column in [c.name for c in unique.columns], (table, unique.name)


def test_foreign_keys_of_distributed_tables_reach_only_reference_or_colocated_tables() -> None:
    for table, column in DISTRIBUTED.items():
        for key in TABLES[table].foreign_keys:
            target = key.column.table.name
            assert target in REFERENCE or (target in DISTRIBUTED and key.parent.name == column), (
                table,
                target,
            )


@pytest.fixture
def migrated() -> Iterator[Any]:
    if not using_postgres():
        pytest.skip("primary keys are made by the PostgreSQL migration (CSP_TEST_DATABASE)")
    url = create_pg_database("citus")
    engine = make_engine(url)
    prepare_schema(engine, Base.metadata, REPO / "services" / "depersonalise" / "migrations")
    try:
        yield engine
    finally:
        engine.dispose()
        drop_pg_database(url)


def test_postgresql_keys_of_distributed_tables_include_the_distribution_column(
    migrated: Any,
) -> None:
    found = inspect(migrated)
    for table, column in DISTRIBUTED.items():
        primary = found.get_pk_constraint(table)["constrained_columns"]
        assert column in primary, (table, primary)
        for unique in found.get_unique_constraints(table):
            assert column in unique["column_names"], (table, unique)
        for index in found.get_indexes(table):
            if index["unique"]:
                assert column in index["column_names"], (table, index)
        assert not found.get_foreign_keys(table)
