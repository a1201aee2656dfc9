"""The cube always equals a recount of the live derived records: after stores, corrections,
retractions, reconciliation drops and a rebuild (cells that reach zero are gone)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import select

from services.depersonalise import cube, derivation, generations
from services.depersonalise.held_records import drop_unheld
from services.depersonalise.layer_registry import load_registry
from services.depersonalise.models import Base, Event
from services.depersonalise.service_state import ensure_state
from shared.catalogue import load_catalogue
from shared.db import make_engine, prepare_schema
from tests.depersonalise.conftest import event, service, wait_rebuild
from tests.depersonalise.test_api import load_demo

CATALOGUE = load_catalogue()


def recount(engine: Any, generation: int) -> tuple[Counter[Any], Counter[Any]]:
    cells: Counter[Any] = Counter()
    people: Counter[Any] = Counter()
    with engine.connect() as conn:
        rows = conn.execute(
            select(derivation.T_RECORD).where(derivation.T_RECORD.c.generation == generation)
        )
        for row in rows.mappings():
            delta = cube.Delta.empty()
            delta.add(dict(row), CATALOGUE[row["dataset"]], +1)
            for key, (count, key_sum) in delta.cells.items():
                cells[(key, "count")] += count
                cells[(key, "key_sum")] += key_sum
            for (key, person), (count, _) in delta.people.items():
                people[(key, person)] += count
    return +cells, +people


def held(engine: Any, generation: int) -> tuple[Counter[Any], Counter[Any]]:
    cells: Counter[Any] = Counter()
    people: Counter[Any] = Counter()
    width = len(cube.CUBE_KEY)
    with engine.connect() as conn:
        for row in conn.execute(
            select(cube.T_CELL).where(cube.T_CELL.c.generation == generation)
        ).mappings():
            key = tuple(row[c] for c in cube.CUBE_KEY)
            assert row["count"] > 0, "a cell at zero was kept"
            cells[(key, "count")] += row["count"]
            cells[(key, "key_sum")] += row["key_sum"]
        for row in conn.execute(
            select(cube.T_PERSON).where(cube.T_PERSON.c.generation == generation)
        ).mappings():
            assert row["count"] > 0
            people[(tuple(row[c] for c in cube.CUBE_KEY)[:width], row["person"])] += row["count"]
    return +cells, +people


def test_the_cube_is_a_recount_of_the_live_records(make_client: Any) -> None:
    client, fake = make_client()
    load_demo(client)
    assert wait_rebuild(client)["state"] == "complete"
    events = [
        event(
            i + 1,
            f"k{i}",
            382_000.0 + 90 * i,
            398_000.0 - 70 * i,
            occurred_at=f"2024-0{1 + i % 3}-{1 + i % 27:02d}T10:00:00Z",
            category=["Burglary", "Robbery"][i % 2],
            outcome=["charged", None][i % 2],
        )
        for i in range(40)
    ]
    events += [
        {
            **event(100 + i, f"p{i}", 382_500.0, 397_500.0, dataset="offender-offence"),
            "person": f"person-{i % 4}",
        }
        for i in range(12)
    ]
    fake.keep(events)
    assert (
        client.post("/internal/events", json={"events": events}, headers=service()).status_code
        == 200
    )
    changes = [
        {
            **events[0],
            "event_id": 200,
            "revision": 2,
            "record": {**events[0]["record"], "category": "Arson"},
        },
        {**events[1], "event_id": 201, "revision": 2, "op": "delete"},
        {**events[41], "event_id": 202, "revision": 2, "op": "delete"},
    ]
    fake.keep(changes)
    assert (
        client.post("/internal/events", json={"events": changes}, headers=service()).status_code
        == 200
    )
    engine = client.app.state.engine
    generation = load_registry(engine).generation
    assert held(engine, generation) == recount(engine, generation)
    assert held(engine, generation)[0] and held(engine, generation)[1]
    spec = CATALOGUE["police-crime"]
    gone = drop_unheld(engine, generation, spec, "gmp", keep={1}, horizon=10**12)
    assert gone > 0
    assert held(engine, generation) == recount(engine, generation)
    load_demo(client, "second")
    assert wait_rebuild(client)["state"] == "complete"
    rebuilt = load_registry(engine).generation
    assert rebuilt != generation
    assert held(engine, rebuilt) == recount(engine, rebuilt)
    with engine.connect() as conn:
        others = conn.execute(
            select(cube.T_CELL.c.generation).where(cube.T_CELL.c.generation != rebuilt)
        ).first()
    assert others is None  # the old generation's cube went with its records


def test_a_recount_gives_the_cells_records_add_one_by_one(database_url: Any) -> None:
    """A rebuild counts its generation in one aggregation (cube.recount): the same cells, counts,
    key sums and people as each record's cells added one by one, whatever JSON its values are."""
    engine = make_engine(database_url("depersonalise"))
    prepare_schema(engine, Base.metadata, Path(cube.__file__).parent / "migrations")
    ensure_state(engine)
    values: list[Any] = ["charged", True, False, None, 12, 1.5, "12", [1, "a"], {"b": 2}]
    rows = []
    for i in range(60):
        dataset = "offender-offence" if i % 4 == 0 else "police-crime"
        event = Event.model_construct(
            event_id=i,
            op="upsert",
            dataset=dataset,
            provider=["gmp", "tfgm"][i % 2],
            record_key=f"r{i}",
            revision=1,
        )
        attributes = {"outcome": values[i % len(values)]} if i % 5 else {}
        rows.append(
            {
                **derivation._row(7, event, deleted=i % 11 == 0),
                "period_start": None if i % 13 == 0 else date(2024, 1 + i % 3, 1),
                "category": ["Burglary", None, "Robbery"][i % 3],
                "attributes": attributes,
                "counted": {"outcome": values[(i + 3) % len(values)]} if i % 3 else None,
                "areas": {"bench": f"E{i % 4}", "other": None if i % 6 == 0 else f"W{i % 2}"},
                "person": f"person-{i % 3}" if dataset == "offender-offence" else None,
                "person_key": i % 3 if dataset == "offender-offence" else None,
                "key": i * 7 % 128,
            }
        )
    with engine.begin() as conn:
        derivation.insert_records(conn, rows)
    generations.recount_cube(engine, 7, CATALOGUE)
    assert held(engine, 7) == recount(engine, 7)
    assert held(engine, 7)[1]
    generations.recount_cube(engine, 7, CATALOGUE)  # a second count replaces the first
    assert held(engine, 7) == recount(engine, 7)
    engine.dispose()
