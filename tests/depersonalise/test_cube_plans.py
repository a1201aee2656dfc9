"""PostgreSQL plans: the reads aggregates and record pages make use the indexes meant for them,
on the partition of the generation served, and the tables are partitioned by generation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import text

from bench.aggregates import fill
from services.depersonalise import base_cells, cover_flags, cube, partitions, record_reads
from services.depersonalise.derivation import T_RECORD
from shared.catalogue import load_catalogue
from shared.grants import slices_of
from tests.conftest import create_pg_database, drop_pg_database, using_postgres

pytestmark = pytest.mark.skipif(
    not using_postgres(), reason="query plans are PostgreSQL's (CSP_TEST_DATABASE=postgresql)"
)
SPEC = load_catalogue()["police-crime"]
SCOPE = slices_of([{"provider": "gmp", "fields": None, "from": "2024-02-10"}])


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    url = create_pg_database("depplans")
    engine = fill(url, 30_000, 300, SPEC)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_pg_database(url)


def plan(engine: Any, statement: Any) -> str:
    sql = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        rows = conn.execute(text(f"EXPLAIN {sql}")).scalars().all()
    return "\n".join(rows)


def test_derived_records_and_the_cube_are_partitioned_by_generation(engine: Any) -> None:
    with engine.connect() as conn:
        for table in partitions.PARTITIONED:
            strategy = conn.execute(
                text(
                    "SELECT partstrat FROM pg_partitioned_table p "
                    "JOIN pg_class c ON c.oid = p.partrelid WHERE c.relname = :t"
                ),
                {"t": table},
            ).scalar_one()
            assert strategy == "l"  # LIST (generation)
            held = conn.execute(text(f"SELECT count(*) FROM ONLY {table}_g1")).scalar_one()
            assert table == "cube_person" or held > 0  # the served generation's own partition


# The served generation's total cells of one provider in the bench's layer.
TOTAL_CELLS = {
    "generation": 1,
    "dataset": "police-crime",
    "layer": "bench",
    "dim": "",
    "provider": "gmp",
}


def test_a_cube_read_uses_the_cell_index_on_its_partition(engine: Any) -> None:
    base = dict(TOTAL_CELLS)
    shown = plan(engine, cube.cell_select(base, False, date(2024, 3, 1), date(2024, 12, 1)))
    assert "cube_cell_g1" in shown and "Index" in shown, shown
    assert "Seq Scan" not in shown, shown
    cut = {**base, "dim": "category"}
    shown = plan(engine, cube.cell_select(cut, True, date(2024, 2, 10), date(2024, 2, 29)))
    assert "Index" in shown and "Seq Scan" not in shown, shown


def test_a_total_table_and_its_probes_are_index_only_scans_of_the_cube_key(engine: Any) -> None:
    base = dict(TOTAL_CELLS)
    statement = base_cells.total_select(base, SPEC, 5, date(2024, 1, 1), date(2024, 12, 31))
    shown = plan(engine, statement)
    scans = [line for line in shown.splitlines() if "Scan" in line]
    # The totals' read and one probe per breakdown, each on the served generation's partition.
    assert len(scans) == 1 + len(cube.dims_of(SPEC)) - 1, shown
    assert all("Index Only Scan using cube_cell_g1_pkey" in line for line in scans), shown


def test_a_total_table_after_a_recount_takes_the_stored_flags_and_never_probes(
    engine: Any,
) -> None:
    """The recount found every flag (cover_flags.py): the probes stay in the plan, for a row
    without one, but PostgreSQL never runs them."""
    base = dict(TOTAL_CELLS)
    statement = base_cells.total_select(base, SPEC, 5, date(2024, 1, 1), date(2024, 12, 31))
    sql = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        conn.exec_driver_sql("SET jit = off")
        shown = "\n".join(conn.execute(text(f"EXPLAIN ANALYZE {sql}")).scalars().all())
    probes = [line for line in shown.splitlines() if "in_" in line and "Scan" in line]
    assert len(probes) == len(cube.dims_of(SPEC)) - 1, shown
    assert all("never executed" in line for line in probes), shown
    assert "Index Only Scan using cube_cell_g1_pkey on cube_cell_g1 total" in shown, shown


def test_a_flag_refresh_is_one_key_lookup_per_touched_row(engine: Any) -> None:
    """cube.apply's refresh of the rows a batch touched: a key lookup of each row's total, never
    a scan of the generation's cells."""
    touched = cover_flags._touched_rows()
    t = cube.T_CELL.c
    statement = cover_flags._refresh_statement(cube.dims_of(SPEC), 5, 1, "police-crime").where(
        *(getattr(t, n) == touched.c[n] for n in cover_flags.ROW)
    )
    compiled = statement.compile(engine)
    rows = {"layers": ["bench"] * 2, "providers": ["gmp"] * 2, "ats": [date(2024, 3, 1)] * 2}
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            f"EXPLAIN {compiled}", {**compiled.params, **rows, "areas": ["E00000007", "E00000008"]}
        )
        shown = "\n".join(found.scalars().all())
    assert "Nested Loop" in shown and "Index Scan using cube_cell_g1_pkey" in shown, shown
    assert "Seq Scan" not in shown, shown


def test_a_record_page_is_a_keyset_read_on_an_index(engine: Any) -> None:
    shown = plan(engine, record_reads.page_select(1, "police-crime", SCOPE, 12_345, 1000))
    assert "derived_record_g1" in shown and "Index" in shown, shown
    assert "Seq Scan" not in shown and "Sort" not in shown, shown


def test_a_cohort_read_of_its_members_uses_the_person_index(engine: Any) -> None:
    from sqlalchemy import select

    members = T_RECORD.c.person.in_([f"p{i}" for i in range(50)])
    statement = select(*record_reads.FACT_COLUMNS).where(
        record_reads._live(1, "police-crime", SCOPE) & members
    )
    shown = plan(engine, statement)
    assert "ix_derived_person" in shown or "person" in shown.split("Index")[-1], shown
    assert "Seq Scan" not in shown, shown
