"""Aggregates from the count cube against a bare SQL ``GROUP BY`` over the same derived rows.

``python -m bench.aggregates`` stores synthetic derived police-crime records (300 areas, 12 months
of 2024, four categories, two outcomes; ``CSP_BENCH_AGG_RECORDS``, 1,000,000 by default) with
their cube cells, then times in the same run:

- ``depersonalise_aggregates_cube_vs_groupby``: the hub's 300-area × 12-month table (cube read,
  grants, the release lattice's protection, every cell laid out and serialised as JSON) against
  a bare ``GROUP BY`` area, month over the same rows (SQLite; PostgreSQL too when it answers,
  ``_postgresql``);
- ``depersonalise_aggregates_scale`` (and ``_postgresql``): the hub's time at 100,000 records
  against its time at the full count (the cube's cost follows cells, not records: target
  within 2×);
- ``depersonalise_aggregates_national_postgresql``: a 35,672-area × 12-month table on PostgreSQL
  (target under 2 s, as the ratio 2 s / time).

- ``depersonalise_rebuild_records_per_s`` and ``depersonalise_rebuild_peak_rss_mb``: a rebuild by
  replay with ``CSP_BENCH_REBUILD_RECORDS`` (1,000,000) held (bench/rebuild.py; target under 1 GB).

``CSP_BENCH_AGG_PARTS`` (``sqlite,postgresql,national,rebuild``) chooses the parts
(``rebuild-sqlite`` or ``rebuild-postgresql`` for one database's rebuild: the opt-in 10 M rebuild
is ``CSP_BENCH_REBUILD_RECORDS=10000000 CSP_BENCH_AGG_PARTS=rebuild-postgresql``). Rows are
written in chunks of 50,000 (executemany on SQLite, COPY on PostgreSQL; memory follows the chunk)
and the cube counted as a rebuild counts it (cube.recount, one aggregation over the records).
Figures at another size than 1,000,000 records get its name (``..._postgresql_10m`` for the
opt-in ``CSP_BENCH_AGG_RECORDS=10000000 CSP_BENCH_AGG_PARTS=postgresql``), so the 1 M figures
``make bench`` records stay.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from bench.results import best_of, record
from services.depersonalise import aggregate_query, formats, generations, routes, tables
from services.depersonalise.cellkey import key_secret, record_key_value
from services.depersonalise.derivation import T_RECORD
from services.depersonalise.layer_registry import Registry
from services.depersonalise.models import Base
from services.depersonalise.service_state import ensure_state
from shared.catalogue import Dataset, load_catalogue
from shared.db import make_engine, prepare_schema
from shared.grants import slices_of

RECORDS = int(os.environ.get("CSP_BENCH_AGG_RECORDS", "1000000"))
SMALL = 100_000
REBUILD = int(os.environ.get("CSP_BENCH_REBUILD_RECORDS", "1000000"))
PG_URL = os.environ.get("CSP_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CATEGORIES = ["Burglary", "Robbery", "Vehicle crime", "Criminal damage and arson"]
OUTCOMES = ["charged", "no-suspect"]
MIGRATIONS = Path(routes.__file__).parent / "migrations"


def size_suffix(records: int) -> str:
    """Figures of an opt-in size get their own names (``_10m``): the 1 M ones stay."""
    return "" if records == 1_000_000 else f"_{records / 1_000_000:g}m".replace(".", "_")


CHUNK = 50_000
SECRET = key_secret("bench")


NULL = object()  # a column the bench leaves empty
FIXED: dict[str, Any] = {
    "generation": 1,
    "dataset": "police-crime",
    "provider": "gmp",
    "revision": 1,
    "deleted": False,
    "occurred_until": NULL,
    "counted": NULL,
    "person": NULL,
    "point_areas": "{}",
    "outside_all": False,
    "x": NULL,
    "y": NULL,
    "method": "none",
    "k": NULL,
    "person_key": NULL,
}
COLUMNS = [c.name for c in T_RECORD.columns if c.name != "id"]


def _drawn(first: int, count: int, areas: int, rng: np.random.Generator) -> dict[str, list[Any]]:
    """One chunk's varying columns (JSON as text, dates as ISO text), drawn by numpy."""
    area = rng.integers(0, areas, count)
    month = rng.integers(1, 13, count)
    day = rng.integers(1, 29, count)
    kind = rng.integers(0, 4, count)
    keys = [f"b{i:09d}" for i in range(first, first + count)]
    outcome = [json.dumps({"outcome": o}) for o in OUTCOMES]
    return {
        "record_key": keys,
        "period_start": [f"2024-{m:02d}-01" for m in month.tolist()],
        "occurred_on": [
            f"2024-{m:02d}-{d:02d}" for m, d in zip(month.tolist(), day.tolist(), strict=True)
        ],
        "category": [CATEGORIES[k] for k in kind.tolist()],
        "attributes": [outcome[k % 2] for k in kind.tolist()],
        "areas": [f'{{"bench": "E{a:08d}"}}' for a in area.tolist()],
        # hmac.digest is record_key_value's HMAC in one call (checked in fill).
        "key": [hmac.digest(SECRET, k.encode(), "sha256")[0] for k in keys],
    }


def _copy_chunk(conn: Any, drawn: dict[str, list[Any]]) -> None:
    """One chunk into derived_record by COPY, as text lines built column by column."""
    fixed = {
        c: "\\N" if v is NULL else ("t" if v else "f") if isinstance(v, bool) else str(v)
        for c, v in FIXED.items()
    }
    columns = [drawn[c] if c in drawn else [fixed[c]] * len(drawn["key"]) for c in COLUMNS]
    body = "".join("\t".join(map(str, line)) + "\n" for line in zip(*columns, strict=True))
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY derived_record ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        copy.write(body.encode())


def _insert_chunk(conn: Any, drawn: dict[str, list[Any]]) -> None:
    """One chunk into derived_record by executemany (SQLite: dates, JSON as text, 0/1)."""
    fixed = {
        c: None if v is NULL else int(v) if isinstance(v, bool) else v for c, v in FIXED.items()
    }
    columns = [drawn[c] if c in drawn else [fixed[c]] * len(drawn["key"]) for c in COLUMNS]
    marks = ", ".join("?" * len(COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO derived_record ({', '.join(COLUMNS)}) VALUES ({marks})",
        list(zip(*columns, strict=True)),
    )


def fill(url: str, records: int, areas: int, spec: Dataset) -> Any:
    """Store ``records`` derived records in chunks (COPY on PostgreSQL; memory follows the chunk)
    and count their cube as a rebuild does (cube.recount: one aggregation over the records)."""
    assert hmac.digest(SECRET, b"b1", "sha256")[0] == record_key_value(SECRET, "b1")
    engine = make_engine(url)
    prepare_schema(engine, Base.metadata, MIGRATIONS)
    ensure_state(engine)
    rng = np.random.default_rng(20241201)
    started = time.perf_counter()
    postgres = engine.dialect.name == "postgresql"
    for first in range(0, records, CHUNK):
        drawn = _drawn(first, min(CHUNK, records - first), areas, rng)
        with engine.begin() as conn:
            (_copy_chunk if postgres else _insert_chunk)(conn, drawn)
    stored = time.perf_counter() - started
    if postgres:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE derived_record"))
    generations.recount_cube(engine, 1, {spec.name: spec})
    if postgres:
        # What autovacuum does soon after a rebuild's recount (deploy/README.md): statistics, and
        # the visibility map that lets the cube's reads stay index-only.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) cube_cell"))
            conn.execute(text("ANALYZE"))
    print(
        f"stored {records:,} records in {stored:.1f} s, their cube in "
        f"{time.perf_counter() - started - stored:.1f} s",
        flush=True,
    )
    return engine


def hub_answer(engine: Any, registry: Registry, areas: int, spec: Dataset) -> bytes:
    """The hub's 12-month table of 2024: cube read under grants, rule, cells laid out and the
    JSON body (as the route writes it)."""
    with engine.connect() as conn:  # the request's read connection
        table = table_on(conn, registry, areas, spec)
    assert table["cells"]
    return body_of(table)


def table_on(conn: Any, registry: Registry, areas: int, spec: Dataset) -> dict[str, Any]:
    """``hub_answer``'s table on the request's read connection."""
    area_list = [(f"E{i:08d}", f"Area {i}") for i in range(areas)]
    scope = slices_of([{"provider": "gmp", "fields": None, "from": "2024-01-01"}])
    return tables.cube_table(
        conn,
        registry,
        spec,
        scope,
        "bench",
        area_list,
        ("month", date(2024, 1, 1), date(2024, 12, 31)),
        None,
        aggregate_query.disclosure_rule(spec, None),
        False,
    )


def body_of(table: dict[str, Any]) -> bytes:
    return formats.aggregates_json({"cells": table["cells"], "disclosure": table["disclosure"]})


def hub_seconds(engine: Any, areas: int, spec: Dataset, repeats: int = 3) -> float:
    """The fastest of ``repeats`` hub answers (``hub_answer``) on generation 1."""
    registry = Registry(generation=1)
    return best_of(lambda: hub_answer(engine, registry, areas, spec), repeats)


def groupby_seconds(engine: Any, repeats: int = 3) -> float:
    area = (
        "areas->>'bench'"
        if engine.dialect.name == "postgresql"
        else "json_extract(areas, '$.bench')"
    )
    sql = text(
        f"SELECT {area}, period_start, count(*) FROM derived_record "
        "WHERE generation = 1 AND dataset = 'police-crime' AND deleted = false "
        "AND provider = 'gmp' AND period_start BETWEEN '2024-01-01' AND '2024-12-31' "
        f"GROUP BY {area}, period_start"
    )

    def run() -> None:
        with engine.connect() as conn:
            assert conn.execute(sql).all()

    return best_of(run, repeats)


def pg_database(name: str) -> str | None:
    """A fresh PostgreSQL database for the run, or None when PostgreSQL does not answer."""
    try:
        admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    except Exception as exc:  # the PostgreSQL figures are skipped, and say so
        print(f"PostgreSQL does not answer ({type(exc).__name__}): skipped", flush=True)
        return None
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


def compare(url: str, suffix: str, spec: Dataset) -> float:
    engine = fill(url, RECORDS, 300, spec)
    hub, bare = hub_seconds(engine, 300, spec), groupby_seconds(engine)
    engine.dispose()
    record(
        f"depersonalise_aggregates_cube_vs_groupby{suffix}{size_suffix(RECORDS)}",
        hub * 1000,
        "ms",
        baseline=bare * 1000,
        baseline_name="bare SQL GROUP BY area, month over the same derived rows",
        target=10.0,
        higher_is_better=False,
        records=RECORDS,
        cells=300 * 12,
    )
    return hub


def rebuild_figures(url: str, suffix: str) -> None:
    """A rebuild by replay in a child process (bench/rebuild.py): records/s and peak RSS."""
    found = subprocess.run(
        [sys.executable, "-m", "bench.rebuild", url, str(REBUILD)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(found.stdout.strip().splitlines()[-1])
    suffix += size_suffix(REBUILD)
    record(
        f"depersonalise_rebuild_records_per_s{suffix}",
        figures["records"] / figures["seconds"],
        "records/s",
        records=figures["records"],
        seconds=round(figures["seconds"], 1),
        recount_seconds=round(figures["recount_seconds"], 1),
        served_answers=figures["served_answers"],
        served_worst_seconds=round(figures["served_worst_seconds"], 3),
    )
    record(
        f"depersonalise_rebuild_peak_rss_mb{suffix}",
        figures["peak_rss_mb"],
        "MiB",
        baseline=1024.0,
        baseline_name="the 1 GB limit",
        target=1.0,
        higher_is_better=False,
        records=figures["records"],
    )


def main() -> None:
    spec = load_catalogue()["police-crime"]
    parts = os.environ.get("CSP_BENCH_AGG_PARTS", "sqlite,postgresql,national,rebuild").split(",")
    for name, part in (
        ("sqlite", sqlite_tables),
        ("postgresql", postgresql_tables),
        ("national", national_table),
    ):
        if name in parts:
            part(spec)
    if "rebuild" in parts or "rebuild-sqlite" in parts:
        with tempfile.TemporaryDirectory() as folder:
            rebuild_figures(f"sqlite:///{folder}/rebuild.db", "")
    if "rebuild" in parts or "rebuild-postgresql" in parts:
        url = pg_database("csp_bench_rebuild")
        if url is not None:
            rebuild_figures(url, "_postgresql")


def sqlite_tables(spec: Dataset) -> None:
    with tempfile.TemporaryDirectory() as folder:
        small = fill(f"sqlite:///{folder}/small.db", SMALL, 300, spec)
        small_hub = hub_seconds(small, 300, spec)
        small.dispose()
        hub = compare(f"sqlite:///{folder}/full.db", "", spec)
    scale_figure("", hub, small_hub)


def scale_figure(suffix: str, hub: float, small_hub: float) -> None:
    record(
        f"depersonalise_aggregates_scale{suffix}{size_suffix(RECORDS)}",
        hub * 1000,
        "ms",
        baseline=small_hub * 1000,
        baseline_name=f"the hub's same table at {SMALL:,} records",
        target=0.5,
        higher_is_better=False,
        records=RECORDS,
    )


def postgresql_tables(spec: Dataset) -> None:
    url = pg_database("csp_bench_aggregates")
    if url is None:
        return
    small = fill(url, SMALL, 300, spec)
    small_hub = hub_seconds(small, 300, spec)
    small.dispose()
    url = pg_database("csp_bench_aggregates")
    assert url is not None
    scale_figure("_postgresql", compare(url, "_postgresql", spec), small_hub)


def national_table(spec: Dataset) -> None:
    url = pg_database("csp_bench_national")
    if url is None:
        return
    engine = fill(url, RECORDS, 35_672, spec)
    seconds = hub_seconds(engine, 35_672, spec, repeats=2)
    engine.dispose()
    record(
        "depersonalise_aggregates_national_postgresql",
        seconds,
        "s",
        baseline=2.0,
        baseline_name="the target: 2 s",
        target=1.0,
        higher_is_better=False,
        records=RECORDS,
        cells=35_672 * 12,
    )


if __name__ == "__main__":
    main()
