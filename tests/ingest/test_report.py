"""The partnership report: quarters and due dates, the figures of a hand-computed quarter of the
demo data, maturity levels, and the route's formats, visibility and refusals."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from scripts.demo import demo_records
from services.ingest.report import maturity, parse_quarter, provider_rows
from services.ingest.service import PushOptions, push
from shared.catalogue import load_catalogue
from shared.db import in_read_transaction
from shared.validation import compile_dataset
from tests.ingest.conftest import Client, token


def admin() -> dict[str, str]:
    """Issued when used: an internal token lives 60 s."""
    return token("ops", ["agency", "admin"])


# Counted by hand from scripts/demo.py's 400 records: January 68, February 60, March 57.
DEMO_Q1 = 185
# police-crime has 3 required and 9 optional fields; the demo fills easting and northing.
OPTIONAL_FILLED = round(2 / 9, 4)


def test_quarters_and_their_due_dates() -> None:
    q3 = parse_quarter("2024-Q3")
    assert (q3.start.isoformat(), q3.end.isoformat(), q3.due.isoformat()) == (
        "2024-07-01",
        "2024-09-30",
        "2024-12-31",
    )
    q4 = parse_quarter("2024-Q4")
    assert (q4.end.isoformat(), q4.due.isoformat()) == ("2024-12-31", "2025-03-31")
    assert parse_quarter("2025-Q1").due.isoformat() == "2025-06-30"
    assert parse_quarter("9998-Q4").due.isoformat() == "9999-03-31"
    for bad in ("2024-Q5", "2024Q1", "2024-q1", "24-Q1", "", "0000-Q1", "1899-Q4", "9999-Q1"):
        with pytest.raises(ValueError):
            parse_quarter(bad)


def _demo_store(engine: Any) -> None:
    """The demo records of January to March pushed in May (on time), with three bad rows; those
    of April to June pushed in October (after their due date, 30 September)."""
    compiled = compile_dataset(load_catalogue()["police-crime"])
    records = demo_records()
    first = [r for r in records if r["occurred_at"] < "2024-04"]
    bad = [
        {"source_ref": "BAD-1", "occurred_at": "2024-02-30", "category": "Burglary"},
        {"source_ref": "BAD-2", "occurred_at": "2024-02-03"},
        {"source_ref": "BAD-3", "occurred_at": "2024-02-04"},
    ]
    rows = [(n, r) for n, r in enumerate(first + bad, start=1)]
    may = datetime(2024, 5, 10, 9, 30, tzinfo=UTC)
    push(engine, compiled, iter(rows), PushOptions(provider="demo-police"), now=may)
    later = [(n, r) for n, r in enumerate([r for r in records if r not in first], start=1)]
    october = datetime(2024, 10, 5, 8, 0, tzinfo=UTC)
    push(engine, compiled, iter(later), PushOptions(provider="demo-police"), now=october)


async def test_a_hand_computed_quarter_of_demo_data(client: Client) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    _demo_store(engine)
    catalogue = load_catalogue()
    (q1,) = in_read_transaction(engine, provider_rows, catalogue, parse_quarter("2024-Q1"), None)
    assert q1["provider"] == "demo-police" and q1["dataset"] == "police-crime"
    assert q1["records"] == DEMO_Q1
    assert q1["received_first"] == q1["received_last"] == "2024-05-10T09:30:00Z"
    assert q1["due"] == "2024-06-30" and q1["on_time"] is True
    assert q1["completeness"] == {"required": 1.0, "optional": OPTIONAL_FILLED}
    assert q1["geocoded"] == 1.0
    assert q1["months_with_records"] == 3 and q1["receipt_months"] == 1
    # Refusals count in the quarter the push arrived: May, so 2024-Q2.
    assert q1["rejected"] == 0 and q1["rejected_reasons"] == []
    (q2,) = in_read_transaction(engine, provider_rows, catalogue, parse_quarter("2024-Q2"), None)
    assert q2["records"] == 400 - DEMO_Q1 and q2["on_time"] is False
    assert q2["received_last"] == "2024-10-05T08:00:00Z" and q2["rejected"] == 3
    assert q2["rejected_reasons"] == [
        {"field": "category", "reason": "is required", "rows": 2},
        {"field": "occurred_at", "reason": "is not a valid ISO 8601 date or date-time", "rows": 1},
    ]
    assert (
        in_read_transaction(
            engine, provider_rows, catalogue, parse_quarter("2024-Q1"), "demo-council"
        )
        == []
    )


def _row(**changes: Any) -> dict[str, Any]:
    row = {
        "provider": "p",
        "dataset": "police-crime",
        "records": 10,
        "on_time": True,
        "completeness": {"required": 1.0, "optional": 0.5},
        "geocoded": 1.0,
        "receipt_months": 3,
    }
    return row | changes


def _agreement(status: str = "active", level: str = "aggregate", **changes: Any) -> dict[str, Any]:
    entry = {
        "id": "isa-1",
        "status": status,
        "providers": ["p"],
        "recipients": ["r"],
        "datasets": [{"dataset": "police-crime", "level": level}],
    }
    return entry | changes


@pytest.mark.parametrize(
    ("rows", "agreements", "level"),
    [
        ([_row()], [_agreement("draft")], 0),
        ([], [_agreement()], 1),
        ([_row(on_time=False)], [_agreement()], 1),
        ([_row(receipt_months=1)], [_agreement()], 2),
        ([_row(geocoded=0.5)], [_agreement()], 2),
        ([_row(completeness={"required": 0.8, "optional": 1.0})], [_agreement()], 2),
        ([_row()], [_agreement()], 3),
        ([_row()], [_agreement(level="personal")], 4),
        # every shared dataset must flow: a second one without records holds it at level 1
        (
            [_row()],
            [_agreement(), _agreement(id="isa-2", datasets=[{"dataset": "council-asb",
                                                              "level": "aggregate"}])],
            1,
        ),
    ],
)  # fmt: skip
def test_maturity_levels(
    rows: list[dict[str, Any]], agreements: list[dict[str, Any]], level: int
) -> None:
    (graded,) = maturity(rows, agreements)
    assert (graded["provider"], graded["recipient"], graded["level"]) == ("p", "r", level)


AGREEMENTS = [
    {
        "id": "isa-demo",
        "title": "DEMO: police crime data",
        "type": "one-way",
        "status": "active",
        "review_by": "2024-06-01",
        "review_state": "overdue",
        "providers": ["demo-police"],
        "recipients": ["demo-council"],
        "datasets": [{"dataset": "police-crime", "level": "depersonalised"}],
    }
]


@pytest.fixture
def agreements_service() -> FastAPI:
    fake = FastAPI()
    fake.state.asked = []

    @fake.get("/internal/agreements")
    def entries(agency: str | None = None) -> list[dict[str, Any]]:
        fake.state.asked.append(agency)
        return [a for a in AGREEMENTS if agency is None or agency in a["providers"]]

    return fake


@pytest.fixture
async def report_client(
    make_client: Callable[..., Awaitable[Client]], agreements_service: FastAPI
) -> Client:
    import httpx

    from services.ingest.main import create_app

    client = await make_client()
    # The same store, now with an agreements service to ask.
    app = create_app(
        client.app.state.settings,  # type: ignore[attr-defined]
        agreements_transport=httpx.ASGITransport(app=agreements_service),
    )
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    reporting = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
    reporting.app = app  # type: ignore[attr-defined]
    _demo_store(app.state.engine)
    yield reporting
    await reporting.aclose()
    await ctx.__aexit__(None, None, None)


async def test_route_answers_json_csv_and_html(
    report_client: Client, agreements_service: FastAPI
) -> None:
    answer = await report_client.get("/v1/reports/partnership?quarter=2024-Q1", headers=admin())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["quarter"] == "2024-Q1" and body["due"] == "2024-06-30"
    assert [(r["provider"], r["records"]) for r in body["rows"]] == [("demo-police", DEMO_Q1)]
    assert body["agreements"] == [
        {k: AGREEMENTS[0][k] for k in ("id", "title", "type", "status", "review_by",
                                       "review_state")}
    ]  # fmt: skip
    assert body["review_due"] == ["isa-demo"]
    (graded,) = body["maturity"]
    assert (graded["recipient"], graded["level"]) == ("demo-council", 2)  # one receipt month
    assert agreements_service.state.asked == [None]
    table = await report_client.get(
        "/v1/reports/partnership?quarter=2024-Q2&format=csv", headers=admin()
    )
    assert table.headers["content-type"].startswith("text/csv")
    (line,) = list(csv.DictReader(io.StringIO(table.text)))
    assert line["records"] == str(400 - DEMO_Q1) and line["on_time"] == "False"
    assert line["rejected"] == "3" and line["rejected_reasons"].startswith("category is required")
    page = await report_client.get(
        "/v1/reports/partnership?quarter=2024-Q1", headers={**admin(), "Accept": "text/html"}
    )
    assert page.headers["content-type"].startswith("text/html")
    assert f"<td>{DEMO_Q1}</td>" in page.text and "2024-Q1" in page.text


async def test_an_agency_sees_its_own_rows(
    report_client: Client, agreements_service: FastAPI
) -> None:
    police = await report_client.get(
        "/v1/reports/partnership?quarter=2024-Q2", headers=token("demo-police")
    )
    assert [r["records"] for r in police.json()["rows"]] == [400 - DEMO_Q1]
    council = await report_client.get(
        "/v1/reports/partnership?quarter=2024-Q2", headers=token("demo-council")
    )
    body = council.json()
    assert body["rows"] == [] and body["agreements"] == []
    assert agreements_service.state.asked == ["demo-police", "demo-council"]


@pytest.mark.parametrize("quarter", ["2024-Q5", "2024", "Q1-2024", "2024-Q1x"])
async def test_a_bad_quarter_is_422_naming_it(report_client: Client, quarter: str) -> None:
    answer = await report_client.get(f"/v1/reports/partnership?quarter={quarter}", headers=admin())
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.json()["errors"]] == ["quarter"]
    early = await report_client.get("/v1/reports/partnership?quarter=0000-Q1", headers=admin())
    assert early.status_code == 422 and early.json()["field"] == "quarter"
    missing = await report_client.get("/v1/reports/partnership", headers=admin())
    assert missing.status_code == 422 and "quarter" in missing.json()["detail"]


async def test_refusals_are_counted_without_the_senders_values(client: Client) -> None:
    """An atomic push refused whole still counts its reasons, the valid rows' too; a field name
    the dataset lacks (it came from the sender and could be anything) is not kept."""
    from sqlalchemy import select

    from services.ingest.tables import REJECTION

    engine = client.app.state.engine  # type: ignore[attr-defined]
    compiled = compile_dataset(load_catalogue()["police-crime"])
    rows = [
        (1, {"source_ref": "A-1", "occurred_at": "2024-02-01", "category": "Burglary",
             "easting": 383000, "northing": 398000}),
        (2, {"source_ref": "A-2", "occurred_at": "2024-02-01", "category": "Burglary",
             "Jane Smith 12 Acacia Avenue": "x", "easting": 383000, "northing": 398000}),
        (3, {"source_ref": "A-3", "occurred_at": "not a date", "category": "Burglary",
             "easting": 383000, "northing": 398000}),
    ]  # fmt: skip
    march = datetime(2024, 3, 1, tzinfo=UTC)
    outcome = push(engine, compiled, iter(rows), PushOptions(provider="p", atomic=True), now=march)
    assert outcome.accepted == 0 and outcome.rejected == 3
    with engine.connect() as connection:
        stored = connection.execute(select(REJECTION)).all()
    assert stored and all(r.batch_seq and r.rows == 1 for r in stored)
    assert all("Jane" not in str(tuple(r)) and "Acacia" not in str(tuple(r)) for r in stored)
    (row,) = in_read_transaction(
        engine, provider_rows, load_catalogue(), parse_quarter("2024-Q1"), "p"
    )
    # Rows refused, each once, as the batch counts them; the reasons as the rows gave them.
    assert row["records"] == 0 and row["rejected"] == 3
    assert {(r["field"], r["reason"]) for r in row["rejected_reasons"]} == {
        (None, "is not a field of the dataset"),
        ("occurred_at", "is not a valid ISO 8601 date or date-time"),
        (None, "refused with the rest of its atomic batch"),
    }
