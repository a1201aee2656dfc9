"""The push path over many small chunks, called directly on the test database (SQLite, or
PostgreSQL's COPY writer under CSP_TEST_DATABASE=postgresql): keys repeated across chunks and
batches, postcode look-ups between chunk copies, and a refused batch leaving nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from sqlalchemy import Engine, func, insert, select

from services.ingest.service import PushOptions, push
from services.ingest.tables import BATCH, OUTBOX, POSTCODE, RECORD
from shared.catalogue import load_catalogue
from shared.errors import ProblemError
from shared.validation import compile_dataset

CRIME = compile_dataset(load_catalogue()["police-crime"])
MOMENT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def crime_row(ref: str, category: str = "Burglary", **place: Any) -> dict[str, Any]:
    where = place or {"latitude": "53.48", "longitude": "-2.24"}
    return {"source_ref": ref, "occurred_at": "2024-02-10T10:00:00Z", "category": category, **where}


def numbered(rows: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    return iter(list(enumerate(rows, start=1)))


def stored(engine: Engine) -> dict[str, tuple[str, int]]:
    """source_ref → (category, corrections) of every stored record."""
    with engine.connect() as connection:
        rows = connection.execute(select(RECORD.c.source_ref, RECORD.c.data, RECORD.c.corrections))
        return {ref: (msgspec.json.decode(data)["category"], n) for ref, data, n in rows}


def test_keys_repeated_across_chunks_keep_the_latest_row_and_count_corrections(
    engine: Engine,
) -> None:
    options = PushOptions(provider="gmp", chunk_rows=3)
    first = [crime_row(f"R{i}") for i in range(1, 8)] + [crime_row("R2", "Robbery")]
    outcome = push(engine, CRIME, numbered(first), options, now=MOMENT)
    assert (outcome.received, outcome.accepted, outcome.rejected) == (8, 8, 0)
    assert outcome.corrections == 1  # the second R2 of the same batch
    held = stored(engine)
    assert len(held) == 7 and held["R2"][0] == "Robbery"

    again = [crime_row("R8"), crime_row("R3", "Vehicle crime"), crime_row("R9")]
    again += [crime_row("R3", "Criminal damage and arson"), crime_row("R10")]
    outcome = push(engine, CRIME, numbered(again), options, now=MOMENT)
    assert (outcome.accepted, outcome.corrections) == (5, 2)
    held = stored(engine)
    assert len(held) == 10
    # the record counts the correction (SQLite's upsert also counts the batch's own repeat)
    assert held["R3"][0] == "Criminal damage and arson" and held["R3"][1] >= 1
    assert held["R1"] == ("Burglary", 0) and held["R10"] == ("Burglary", 0)
    with engine.connect() as connection:
        outbox = connection.execute(select(func.count()).select_from(OUTBOX)).scalar()
    assert outbox == 2  # one row per batch, however many chunks it had


def test_postcodes_are_looked_up_between_chunk_copies(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(POSTCODE), [{"postcode": "M1 1AD", "easting": 384000.0, "northing": 398000.0}]
        )
    rows = [crime_row(f"P{i}", postcode="M1 1AD") for i in range(1, 6)]
    rows.insert(2, crime_row("X1", postcode="ZZ1 1ZZ"))
    outcome = push(engine, CRIME, numbered(rows), PushOptions("gmp", chunk_rows=2), now=MOMENT)
    assert (outcome.accepted, outcome.rejected) == (5, 1)
    assert outcome.errors == [
        {
            "row": 3,
            "field": "postcode",
            "message": "is not in the loaded postcode layer, and no coordinates",
        }
    ]
    with engine.connect() as connection:
        sources = connection.execute(select(RECORD.c.location_source, RECORD.c.easting)).all()
    assert sorted(sources) == [("postcode", 384000.0)] * 5


def test_a_batch_over_the_row_limit_leaves_nothing_behind(engine: Engine) -> None:
    rows = [crime_row(f"L{i}") for i in range(1, 8)]
    options = PushOptions(provider="gmp", chunk_rows=2, max_rows=5)
    with pytest.raises(ProblemError) as refused:
        push(engine, CRIME, numbered(rows), options, now=MOMENT)
    assert refused.value.status == 413
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(RECORD)).scalar() == 0
        assert connection.execute(select(func.count()).select_from(BATCH)).scalar() == 0
    # the connection and the writer are free again: the next push stores its rows
    outcome = push(engine, CRIME, numbered(rows[:3]), options, now=MOMENT)
    assert outcome.accepted == 3 and len(stored(engine)) == 3


def test_an_atomic_batch_with_an_error_in_a_late_chunk_stores_none(engine: Engine) -> None:
    rows = [crime_row(f"A{i}") for i in range(1, 7)]
    rows.append({"source_ref": "A7", "occurred_at": "2024-02-30", "category": "Burglary"})
    options = PushOptions(provider="gmp", chunk_rows=2, atomic=True)
    outcome = push(engine, CRIME, numbered(rows), options, now=MOMENT)
    assert (outcome.accepted, outcome.rejected, outcome.errors_total) == (0, 7, 1)
    assert stored(engine) == {}
    with engine.connect() as connection:
        assert connection.execute(select(BATCH.c.status)).scalars().all() == ["rejected"]


@pytest.mark.parametrize("repeated", [False, True], ids=["straight-in", "staged"])
def test_text_that_copy_escapes_is_stored_as_sent(engine: Engine, repeated: bool) -> None:
    """Tabs, newlines, carriage returns, backslashes, quotes and letters beyond ASCII in a
    value reach ``record`` unchanged, whether a chunk is copied straight in or staged."""
    awkward = 'a\tb\nc\r\nd \\ e \\N "f" \u00e9\u2603'
    place = {"latitude": "53.48", "longitude": "-2.24"}
    rows = [crime_row(f"T{i}", location_description=f"{awkward} {i}", **place) for i in range(4)]
    rows[1]["category"] = "Criminal damage\\arson"
    if repeated:
        rows.append(crime_row("T0", location_description=awkward, **place))
    outcome = push(
        engine, CRIME, numbered(rows), PushOptions(provider="gmp", chunk_rows=2), now=MOMENT
    )
    assert outcome.errors == []
    with engine.connect() as connection:
        held = connection.execute(select(RECORD.c.source_ref, RECORD.c.data, RECORD.c.unlisted))
        found = {ref: (msgspec.json.decode(data), unlisted) for ref, data, unlisted in held}
    assert found["T0"][0]["location_description"] == (awkward if repeated else f"{awkward} 0")
    assert found["T3"][0]["location_description"] == f"{awkward} 3"
    assert found["T1"][0]["category"] == "Criminal damage\\arson"
    assert {unlisted for _, unlisted in found.values()} == {None}
