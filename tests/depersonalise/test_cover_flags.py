"""The cover flag each total cell keeps (cover_flags.py) is always what the release lattice's
own rule (protection.uncovered_rows) finds from the cube's cells: after every batch of adds,
removals and moves between categories, after a recount, and with two writers changing the same
rows at once. A read at another threshold, or of a row without a flag, probes instead."""

from __future__ import annotations

import random
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, update

from services.depersonalise import base_cells, cube, derivation, generations, protection
from services.depersonalise.models import Base, Event
from services.depersonalise.service_state import ensure_state
from shared.catalogue import load_catalogue
from shared.db import make_engine, prepare_schema
from shared.grants import slices_of
from tests.conftest import using_postgres

SPEC = load_catalogue()["police-crime"]
THRESHOLD = SPEC.disclosure.threshold
MONTHS = [date(2024, 1, 1), date(2024, 2, 1)]
AREAS = ["E1", "E2", "E3", "E4"]
CATEGORIES = ["Burglary", "Robbery", "Arson"]


def _engine(database_url: Any) -> Any:
    engine = make_engine(database_url("depersonalise"))
    prepare_schema(engine, Base.metadata, Path(cube.__file__).parent / "migrations")
    ensure_state(engine)
    return engine


def _row(generation: int, i: int, rng: random.Random) -> dict[str, Any]:
    event = Event.model_construct(
        event_id=i,
        op="upsert",
        dataset=SPEC.name,
        provider=rng.choice(["gmp", "tfgm"]),
        record_key=f"r{i}",
        revision=1,
    )
    return {
        **derivation._row(generation, event, deleted=False),
        "period_start": rng.choice(MONTHS),
        "category": rng.choice(CATEGORIES),
        "attributes": {"outcome": rng.choice(["charged", "no-suspect", None])},
        "counted": None,
        "areas": {"bench": rng.choice(AREAS)},
        "key": rng.randrange(128),
    }


def expected_flags(engine: Any, generation: int) -> dict[tuple[Any, ...], bool]:
    """Each total at or above the threshold → whether protection.uncovered_rows finds its row
    uncovered, from the cube's breakdown cells read back."""
    t = cube.T_CELL.c
    with engine.connect() as conn:
        found = conn.execute(
            select(t.layer, t.provider, t.at, t.area, t.dim, t.value, t.count).where(
                t.generation == generation, t.dataset == SPEC.name, t.fine.is_(False)
            )
        ).all()
    cells = pd.DataFrame(found, columns=["layer", "provider", "at", "area", "dim", "v", "count"])
    cells["at"] = [cube.as_date(a) for a in cells["at"]]
    row_key = ["layer", "provider", "at", "area"]
    codes, rows = pd.factorize(pd.MultiIndex.from_frame(cells[row_key]))
    cells["row"] = codes
    totals = cells[(cells["dim"] == cube.TOTAL) & (cells["count"] >= THRESHOLD)]
    dims = []
    for dim in cube.dims_of(SPEC)[1:]:
        part = cells[cells["dim"] == dim]
        value = pd.factorize(part["v"])[0]
        zeros = np.zeros(len(part), dtype=np.int64)
        dims.append(
            protection.Cells(
                zeros,
                part["row"].to_numpy(np.int64),
                zeros,
                np.asarray(value, dtype=np.int64),
                part["count"].to_numpy(np.int64),
                zeros,
            )
        )
    bad = set(protection.uncovered_rows(dims, THRESHOLD).area.tolist())
    return {tuple(rows[r]): r in bad for r in totals["row"].tolist()}


def stored_flags(engine: Any, generation: int) -> dict[tuple[Any, ...], tuple[Any, Any]]:
    t = cube.T_CELL.c
    with engine.connect() as conn:
        found = conn.execute(
            select(t.layer, t.provider, t.at, t.area, t.uncovered, t.uncovered_for).where(
                t.generation == generation,
                t.dataset == SPEC.name,
                t.fine.is_(False),
                t.dim == cube.TOTAL,
                t.count >= THRESHOLD,
            )
        ).all()
    return {(r[0], r[1], cube.as_date(r[2]), r[3]): (r[4], r[5]) for r in found}


def assert_flags_hold(engine: Any, generation: int) -> tuple[int, int]:
    """Every total at or above the threshold has its flag, found at the threshold, and it is the
    lattice's own answer; (rows, of which uncovered)."""
    expected = expected_flags(engine, generation)
    stored = stored_flags(engine, generation)
    assert set(stored) == set(expected)
    wrong = {
        row: (stored[row], flag)
        for row, flag in expected.items()
        if stored[row] != (flag, THRESHOLD)
    }
    assert not wrong, wrong
    return len(expected), sum(expected.values())


def _apply(engine: Any, rows: list[dict[str, Any]], sign: int) -> None:
    delta = cube.Delta.empty()
    for row in rows:
        delta.add(row, SPEC, sign)
    with engine.begin() as conn:
        cube.apply(conn, delta)


def _moved(row: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same record in another category or with another outcome (its total unchanged)."""
    if rng.random() < 0.5:
        return {**row, "category": rng.choice([c for c in CATEGORIES if c != row["category"]])}
    return {**row, "attributes": {"outcome": rng.choice(["charged", "no-suspect", None])}}


def test_the_flags_follow_adds_removals_moves_and_a_recount(database_url: Any) -> None:
    engine = _engine(database_url)
    rng = random.Random(20241202)
    live = [_row(1, i, rng) for i in range(160)]
    seen = [0, 0]
    for start in range(0, len(live), 40):  # stored in four batches
        _apply(engine, live[start : start + 40], +1)
        assert_flags_hold(engine, 1)
    for step in range(12):
        batch = rng.sample(range(len(live)), 8)
        gone = batch[:3]
        moved = batch[3:]
        delta = cube.Delta.empty()
        for i in gone + moved:
            delta.add(live[i], SPEC, -1)
        for i in moved:
            live[i] = _moved(live[i], rng)
            delta.add(live[i], SPEC, +1)
        added = [_row(1, 1000 + step * 10 + j, rng) for j in range(4)]
        for row in added:
            delta.add(row, SPEC, +1)
        with engine.begin() as conn:
            cube.apply(conn, delta)
        live = [row for i, row in enumerate(live) if i not in gone] + added
        rows, uncovered = assert_flags_hold(engine, 1)
        seen = [seen[0] + uncovered, seen[1] + rows - uncovered]
    assert seen[0] > 0 and seen[1] > 0  # both answers were met
    with engine.begin() as conn:
        derivation.insert_records(conn, [{**row, "generation": 2} for row in live])
    generations.recount_cube(engine, 2, {SPEC.name: SPEC})
    assert stored_flags(engine, 2) == stored_flags(engine, 1)
    assert_flags_hold(engine, 2)
    engine.dispose()


def test_two_writers_of_the_same_rows_leave_the_flags_true(database_url: Any) -> None:
    """Two writers move records of the same few rows between categories at once; each batch's
    flags are found after its cells, so neither leaves a flag found from stale cells."""
    engine = _engine(database_url)
    rng = random.Random(7)
    live = [_row(1, i, rng) for i in range(120)]
    for row in live:
        row["areas"] = {"bench": AREAS[0]}
        row["period_start"] = MONTHS[0]
    _apply(engine, live, +1)
    halves = [live[0::2], live[1::2]]
    failures: list[BaseException] = []

    def writer(rows: list[dict[str, Any]], seed: int) -> None:
        mine = random.Random(seed)
        try:
            for _ in range(30):
                i = mine.randrange(len(rows))
                delta = cube.Delta.empty()
                delta.add(rows[i], SPEC, -1)
                rows[i] = _moved(rows[i], mine)
                delta.add(rows[i], SPEC, +1)
                with engine.begin() as conn:
                    cube.apply(conn, delta)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(h, n)) for n, h in enumerate(halves)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    rows, _ = assert_flags_hold(engine, 1)
    assert rows >= 2  # both providers' rows of the one area and month
    engine.dispose()


def _read(engine: Any, threshold: int) -> tuple[Any, set[Any]]:
    query = cube.Query(1, SPEC.name, "bench", None, MONTHS[0], date(2024, 2, 29))
    scope = slices_of([{"provider": p, "fields": None} for p in ("gmp", "tfgm")])
    with engine.connect() as conn:
        cells, loose = base_cells.read_table(conn, query, SPEC, scope, threshold)
        by, by_loose = base_cells.read_table(
            conn,
            cube.Query(1, SPEC.name, "bench", "category", MONTHS[0], date(2024, 2, 29)),
            SPEC,
            scope,
            threshold,
        )
    counts = sorted(
        (cells.areas[a], cells.periods[p], n)
        for a, p, n in zip(cells.area, cells.period, cells.count.tolist(), strict=True)
    )
    return (counts, len(by)), loose | {("by", *row) for row in by_loose}


def test_a_read_without_flags_or_at_another_threshold_probes(database_url: Any) -> None:
    engine = _engine(database_url)
    rng = random.Random(11)
    _apply(engine, [_row(1, i, rng) for i in range(110)], +1)
    answers = {t: _read(engine, t) for t in (THRESHOLD, THRESHOLD + 2)}
    assert answers[THRESHOLD][1]  # some rows are uncovered
    with engine.begin() as conn:  # every flag forgotten (cells written before flags existed)
        conn.execute(update(cube.T_CELL).values(uncovered=None, uncovered_for=None))
    for threshold, answer in answers.items():
        assert _read(engine, threshold) == answer
    with engine.begin() as conn:  # every flag wrong: a read at another threshold never uses one
        conn.execute(
            update(cube.T_CELL)
            .where(cube.T_CELL.c.dim == cube.TOTAL)
            .values(uncovered=True, uncovered_for=THRESHOLD)
        )
    assert _read(engine, THRESHOLD + 2) == answers[THRESHOLD + 2]
    assert _read(engine, THRESHOLD)[1] != answers[THRESHOLD][1]  # ...while one at it does
    engine.dispose()


def _waiting_on_a_lock(engine: Any) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).scalar_one()
        )


@pytest.mark.skipif(not using_postgres(), reason="SQLite has one writer at a time")
def test_a_writer_of_a_row_another_is_changing_waits_and_sees_its_cells(
    database_url: Any,
) -> None:
    """One writer moves a record to a new category (its row now lacks a cover there) and holds
    its transaction open; a second writer of the same row changes only its outcome cells, cells
    the first does not touch. The second waits for the first on the row's total and finds the
    flag from the first one's cells too: the row stays uncovered."""
    engine = _engine(database_url)
    rng = random.Random(3)
    rows = [
        {
            **_row(1, i, rng),
            "provider": "gmp",
            "areas": {"bench": "E1"},
            "period_start": MONTHS[0],
            "category": CATEGORIES[i % 2],
            "attributes": {"outcome": ["charged", "no-suspect"][i // 6]},
        }
        for i in range(12)
    ]
    _apply(engine, rows, +1)  # Burglary 6, Robbery 6; charged 6, no-suspect 6: covered
    assert assert_flags_hold(engine, 1) == (1, 0)
    first, second = cube.Delta.empty(), cube.Delta.empty()
    first.add(rows[0], SPEC, -1)
    first.add({**rows[0], "category": CATEGORIES[2]}, SPEC, +1)  # Burglary 5, Arson 1
    second.add(rows[1], SPEC, -1)
    second.add({**rows[1], "attributes": {"outcome": "no-suspect"}}, SPEC, +1)  # 5 and 7
    failures: list[BaseException] = []

    def write_second() -> None:
        try:
            with engine.begin() as conn:
                cube.apply(conn, second)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    with engine.connect() as conn:
        transaction = conn.begin()
        cube.apply(conn, first)
        thread = threading.Thread(target=write_second)
        thread.start()
        for _ in range(600):  # until the second writer waits on a row lock (at most 60 s)
            if _waiting_on_a_lock(engine) or not thread.is_alive():
                break
            time.sleep(0.1)
        transaction.commit()
    thread.join()
    assert not failures, failures
    assert assert_flags_hold(engine, 1) == (1, 1)
    engine.dispose()
