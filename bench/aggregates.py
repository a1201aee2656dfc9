"""Aggregates from the count cube against a bare SQL ``GROUP BY`` over the same derived rows.

``python -m bench.aggregates`` stores synthetic derived police-crime records (300 areas, 12 months
of 2024, four categories, two outcomes; ``CSP_BENCH_AGG_RECORDS``, 1,000,000 by default) with
their cube cells, then times in the same run:

- ``depersonalise_aggregates_cube_vs_groupby``: the hub's 300-area × 12-month table (cube read,
  grants, the release lattice's protection, every cell laid out and serialised as JSON) against
  a bare ``GROUP BY`` area, month over the same rows (SQLite; PostgreSQL too when it answers,
  ``_postgresql``);
- ``depersonalise_aggregates_scale``: the hub's time at 100,000 records against its time at the
  full count (the cube's cost follows cells, not records: target within 2×);
- ``depersonalise_aggregates_national_postgresql``: a 35,672-area × 12-month table on PostgreSQL
  (target under 2 s, as the ratio 2 s / time).

- ``depersonalise_rebuild_records_per_s`` and ``depersonalise_rebuild_peak_rss_mb``: a rebuild by
  replay with ``CSP_BENCH_REBUILD_RECORDS`` (1,000,000) held (bench/rebuild.py; target under 1 GB).

``CSP_BENCH_AGG_PARTS`` (``sqlite,postgresql,national,rebuild``) chooses the parts. Rows are
written in bulk (executemany on SQLite, COPY on PostgreSQL, store.insert_records) and the cube by
the code that maintains it (cube.Delta, cube.apply), batch by batch.
"""

from __future__ import annotations

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
from services.depersonalise import cube, formats, routes, store, tables
from services.depersonalise.cellkey import key_secret, record_key_value
from services.depersonalise.models import Base, Event
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
CHUNK = 50_000
SECRET = key_secret("bench")


def _rows(first: int, count: int, areas: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    area = rng.integers(0, areas, count)
    month = rng.integers(1, 13, count)
    day = rng.integers(1, 29, count)
    kind = rng.integers(0, 4, count)
    rows = []
    for i in range(count):
        key = f"b{first + i:09d}"
        start = date(2024, int(month[i]), 1)
        rows.append(
            {
                **store._row(1, _event(key), deleted=False),
                "period_start": start,
                "occurred_on": start.replace(day=int(day[i])),
                "category": CATEGORIES[kind[i]],
                "attributes": {"outcome": OUTCOMES[kind[i] % 2]},
                "areas": {"bench": f"E{area[i]:08d}"},
                "key": record_key_value(SECRET, key),
            }
        )
    return rows


def _event(key: str) -> Event:
    return Event.model_construct(
        event_id=0, op="upsert", dataset="police-crime", provider="gmp", record_key=key, revision=1
    )


def fill(url: str, records: int, areas: int, spec: Dataset) -> Any:
    engine = make_engine(url)
    prepare_schema(engine, Base.metadata, MIGRATIONS)
    store.ensure_state(engine)
    rng = np.random.default_rng(20241201)
    started = time.perf_counter()
    for first in range(0, records, CHUNK):
        rows = _rows(first, min(CHUNK, records - first), areas, rng)
        delta = cube.Delta.empty()
        for row in rows:
            delta.add(row, spec, +1)
        with engine.begin() as conn:
            store.insert_records(conn, rows)
            cube.apply(conn, delta)
    print(f"stored {records:,} records in {time.perf_counter() - started:.1f} s", flush=True)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    return engine


def hub_seconds(engine: Any, areas: int, spec: Dataset, repeats: int = 3) -> float:
    """The hub's answer: cube read under grants, rule, cells laid out and the JSON body (as the
    route writes it)."""
    registry = store.Registry(generation=1)
    area_list = [(f"E{i:08d}", f"Area {i}") for i in range(areas)]
    scope = slices_of([{"provider": "gmp", "fields": None, "from": "2024-01-01"}])
    rule = routes._rule(spec, None)

    def answer() -> None:
        table = tables.cube_table(
            engine,
            registry,
            spec,
            scope,
            "bench",
            area_list,
            ("month", date(2024, 1, 1), date(2024, 12, 31)),
            None,
            rule,
            False,
        )
        assert table["cells"]
        formats.aggregates_json({"cells": table["cells"], "disclosure": table["disclosure"]})

    return best_of(answer, repeats)


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
        f"depersonalise_aggregates_cube_vs_groupby{suffix}",
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
    record(
        f"depersonalise_rebuild_records_per_s{suffix}",
        figures["records"] / figures["seconds"],
        "records/s",
        records=figures["records"],
        seconds=round(figures["seconds"], 1),
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
    if "rebuild" in parts:
        with tempfile.TemporaryDirectory() as folder:
            rebuild_figures(f"sqlite:///{folder}/rebuild.db", "")
        url = pg_database("csp_bench_rebuild")
        if url is not None:
            rebuild_figures(url, "_postgresql")


def sqlite_tables(spec: Dataset) -> None:
    with tempfile.TemporaryDirectory() as folder:
        small = fill(f"sqlite:///{folder}/small.db", SMALL, 300, spec)
        small_hub = hub_seconds(small, 300, spec)
        small.dispose()
        hub = compare(f"sqlite:///{folder}/full.db", "", spec)
    record(
        "depersonalise_aggregates_scale",
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
    if url is not None:
        compare(url, "_postgresql", spec)


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
