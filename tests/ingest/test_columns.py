"""A CSV push validated column by column (``columns.py``) keeps and refuses exactly the rows the
row-by-row path does, with the same errors in the same order and the same stored records, on
SQLite and on PostgreSQL's COPY writer: the same CSV is pushed both ways and compared."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from services.ingest.bodies import csv_header, csv_rows
from services.ingest.service import PushOptions, PushOutcome, push
from services.ingest.tables import RECORD
from shared.catalogue import load_catalogue
from shared.validation import CompiledDataset, compile_dataset

MOMENT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CATALOGUE = load_catalogue()


def pushed(
    engine: Engine, compiled: CompiledDataset, text: str, provider: str, by_column: bool
) -> PushOutcome:
    header, reader = csv_header(io.StringIO(text, newline=""))
    rows = csv_rows(header, reader)
    if not by_column:
        rows = (row for row in rows)  # a plain iterator of rows takes the row-by-row path
    options = PushOptions(provider=provider, chunk_rows=4)
    return push(engine, compiled, rows, options, now=MOMENT)


def held(engine: Engine, provider: str) -> list[tuple[Any, ...]]:
    columns = [c for c in RECORD.columns if c.name not in ("id", "provider", "batch_seq")]
    columns = [c for c in columns if c.name not in ("revision", "first_batch")]
    with engine.connect() as connection:
        query = select(*columns).where(RECORD.c.provider == provider)
        return sorted(tuple(row) for row in connection.execute(query.order_by(RECORD.c.source_ref)))


def assert_same_both_ways(engine: Engine, compiled: CompiledDataset, text: str) -> PushOutcome:
    by_column = pushed(engine, compiled, text, "by-column", by_column=True)
    by_row = pushed(engine, compiled, text, "by-row", by_column=False)
    assert {**by_column.answer(), "batch_id": ""} == {**by_row.answer(), "batch_id": ""}
    assert by_column.counts() == by_row.counts()
    assert by_column.reasons == by_row.reasons
    assert held(engine, "by-column") == held(engine, "by-row")
    return by_column


CRIMES = """\
source_ref,occurred_at,occurred_to,category,latitude,longitude,easting,northing,offence_code
C1,2024-02-10T10:00:00Z,,Burglary,53.48,-2.24,,,28
C2,2024-02-11T23:59:59Z,,Robbery,53.49,-2.25,,,
C3,2024-02-12T00:00:00Z,,Vehicle crime,53.47,-2.23,,,29
C4,2024-02-13T08:30:00Z,,Burglary,53.46,-2.22,,,30
C5,2024-02-10T10:00:00Z,2024-02-11T10:00:00Z,Burglary,53.48,-2.24,,,28
  ,2024-02-10T10:00:00Z,,Burglary,53.48,-2.24,,,28
C7,2024-02-10T10:00:00Z,,Burglary,abc,-2.24,,,28
C8,2024-02-10T10:00:00Z,,Burglary,"53,48",-2.24,,,28
C9,2024-02-10T10:00:00Z,,Burglary,53.48
C10,2024-02-10,,Burglary,53.48,-2.24,,,28
C11,2024-02-10T11:00:00+01:00,,Burglary,53.48,-2.24,,,28
C12,2024-02-30T10:00:00Z,,Burglary,53.48,-2.24,,,28
C13,1899-12-31T10:00:00Z,,Burglary,53.48,-2.24,,,28

C14,2024-02-10T10:00:00Z,2024-02-09T10:00:00Z,Burglary,53.48,-2.24,,,28
C15,2024-02-10T10:00:00Z,,Burglary,,,383000.5,398000.2,28
C16,2024-02-10T10:00:00Z,,Burglary,53.48,,,,28
C17,2024-02-10T10:00:00Z,,Burglary,54.0,-4.0,,,28
C18,2024-02-10T10:00:00Z,,,53.48,-2.24,,,28
C19,2024-02-10T10:00:00Z,,Burglary,40.7,-74.0,,,28
C20,2024-02-10T10:00:00Z,,Burglary,95,-2.24,,,28
C21,2024-02-10T10:00:00Z,,  Burglary  ,53.48,-2.24,,,12345678901234567
C22,2024-02-10T10:00:00Z,,Burglary,,,,,28
C23,2024-01-01T10:00:00Z,,Burglary,nan,-2.24,,,28
C2,2024-02-10T10:00:00Z,,Theft,53.48,-2.24,,,28
"""


def test_crimes_are_kept_and_refused_alike_both_ways(engine: Engine) -> None:
    compiled = compile_dataset(CATALOGUE["police-crime"])
    outcome = assert_same_both_ways(engine, compiled, CRIMES)
    assert outcome.received == 24
    refused = {(e["row"], e["field"]) for e in outcome.errors}
    assert {(6, "source_ref"), (7, "latitude"), (9, None), (12, "occurred_at")} <= refused
    assert {(14, "occurred_to"), (16, "longitude"), (18, "category"), (22, "location")} <= refused
    assert 0 < outcome.accepted < outcome.received


def test_a_regular_csv_is_stored_alike_both_ways(engine: Engine) -> None:
    compiled = compile_dataset(CATALOGUE["police-crime"])
    lines = ["source_ref,occurred_at,category,latitude,longitude,offence_code"]
    lines += [
        f"R{i},2024-02-{i % 28 + 1:02d}T10:00:00Z,Burglary,53.4{i},-2.2{i},{i}" for i in range(10)
    ]
    outcome = assert_same_both_ways(engine, compiled, "\r\n".join(lines) + "\r\n")
    assert (outcome.accepted, outcome.rejected, outcome.late) == (10, 0, 0)


def test_listed_values_take_their_spelling_alike_both_ways(engine: Engine) -> None:
    dataset = CATALOGUE["police-crime"]
    listed = [
        spec.model_copy(update={"allowed": ["Burglary", "Robbery"], "allowed_strict": False})
        if spec.name == "category"
        else spec
        for spec in dataset.fields
    ]
    compiled = compile_dataset(dataset.model_copy(update={"fields": listed}))
    text = (
        "source_ref,occurred_at,category,easting,northing\n"
        "L1,2024-02-10T10:00:00Z,burglary,383000,398000\n"
        "L2,2024-02-10T10:00:00Z,Arson,383000,398000\n"
        "L3,2024-02-10T10:00:00Z,ROBBERY,383000,398000\n"
    )
    outcome = assert_same_both_ways(engine, compiled, text)
    assert outcome.accepted == 3
    with engine.connect() as connection:
        unlisted = connection.execute(
            select(RECORD.c.source_ref, RECORD.c.unlisted).where(RECORD.c.provider == "by-column")
        )
        assert dict(unlisted.all()) == {"L1": None, "L2": "category", "L3": None}


def test_a_strict_list_refuses_alike_both_ways(engine: Engine) -> None:
    compiled = compile_dataset(CATALOGUE["fire-incident"])
    text = (
        "source_ref,occurred_at,category,easting,northing\n"
        "F1,2024-02-10T10:00:00Z,violence against fire staff,383000,398000\n"
        "F2,2024-02-10T10:00:00Z,Chip pan,383000,398000\n"
    )
    outcome = assert_same_both_ways(engine, compiled, text)
    assert outcome.accepted == 1
    assert [(e["row"], e["field"]) for e in outcome.errors] == [(2, "category")]


def test_identifiers_and_dates_of_people_alike_both_ways(engine: Engine) -> None:
    compiled = compile_dataset(CATALOGUE["drug-treatment"])
    text = (
        "source_ref,occurred_at,category,substance,nhs_number,date_of_birth,postcode\n"
        "D1,2024-02-10,Opiates,Heroin,943 476 5919,05/01/1990,m14 5ab\n"
        "D2,2024-02-10,Opiates,Heroin,9434765918,1990-01-05,\n"
        "D3,2024-02-10,Opiates,Heroin,,1850-01-01,M1 1AA\n"
        "D4,2024-02-10,Opiates,Heroin,,,not a postcode\n"
        "D5,2024-02-10,Opiates,,,,\n"
    )
    outcome = assert_same_both_ways(engine, compiled, text)
    assert [e["row"] for e in outcome.errors][-3:] == [3, 4, 5]


def test_a_non_finite_number_among_regular_ones_is_refused_alike_both_ways(
    engine: Engine,
) -> None:
    compiled = compile_dataset(CATALOGUE["police-crime"])
    text = "source_ref,occurred_at,category,latitude,longitude\n" + "".join(
        f"N{i},2024-02-10T10:00:00Z,Burglary,{value},-2.24\n"
        for i, value in enumerate(["53.48", "inf", "53.47", "nan"])
    )
    outcome = assert_same_both_ways(engine, compiled, text)
    assert [(e["row"], e["field"]) for e in outcome.errors] == [(2, "latitude"), (4, "latitude")]
