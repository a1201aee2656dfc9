"""Data quality of stored records, per period: completeness of every field, how records were
located, late, corrected and outside-the-national-list counts, and what batches refused."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import msgspec
from sqlalchemy import Connection, select

from services.ingest.tables import BATCH, RECORD
from shared.catalogue import Dataset
from shared.periods import stored_period_label

_decode = msgspec.json.Decoder().decode


def _empty_period(names: list[str], listed: list[str]) -> dict[str, Any]:
    return {
        "records": 0,
        "filled": dict.fromkeys(names, 0),
        "geocoded": {"coordinates": 0, "postcode": 0, "none": 0},
        "late": 0,
        "corrected": 0,
        "corrections": 0,
        "outside_national_list": dict.fromkeys(listed, 0),
    }


def _count_records(
    connection: Connection, dataset: Dataset, provider: str | None, period: str
) -> dict[str, dict[str, Any]]:
    names = dataset.field_names
    listed = [f.name for f in dataset.fields if f.allowed]
    periods: dict[str, dict[str, Any]] = defaultdict(lambda: _empty_period(names, listed))
    query = select(
        RECORD.c.occurred_at,
        RECORD.c.location_source,
        RECORD.c.late,
        RECORD.c.corrections,
        RECORD.c.unlisted,
        RECORD.c.data,
    ).where(RECORD.c.dataset == dataset.name)
    if provider is not None:
        query = query.where(RECORD.c.provider == provider)
    for row in _stream(connection, query):
        entry = periods[stored_period_label(row.occurred_at, period)]
        entry["records"] += 1
        filled = entry["filled"]
        for name in _decode(row.data):
            if name in filled:
                filled[name] += 1
        entry["geocoded"][row.location_source] += 1
        entry["late"] += bool(row.late)
        entry["corrected"] += row.corrections > 0
        entry["corrections"] += row.corrections
        if row.unlisted:
            for name in row.unlisted.split(","):
                entry["outside_national_list"][name] += 1
    return periods


def quality(
    connection: Connection, dataset: Dataset, provider: str | None, period: str
) -> dict[str, Any]:
    """Per period: completeness of every field, how records were located, late, corrected and
    outside-the-national-list counts; plus what batches refused for lying outside GB."""
    periods = _count_records(connection, dataset, provider, period)
    batches = select(BATCH.c.outside_gb, BATCH.c.rejected, BATCH.c.received).where(
        BATCH.c.dataset == dataset.name, BATCH.c.kind == "push"
    )
    if provider is not None:
        batches = batches.where(BATCH.c.provider == provider)
    pushed = connection.execute(batches).all()
    result = []
    for key in sorted(periods):
        entry = periods[key]
        count = entry.pop("records")
        filled = entry.pop("filled")
        result.append(
            {
                "period": key,
                "records": count,
                "completeness": {n: round(filled[n] / count, 4) for n in dataset.field_names},
                **entry,
            }
        )
    return {
        "dataset": dataset.name,
        "provider": provider,
        "period": period,
        "periods": result,
        "batches": {
            "count": len(pushed),
            "received": sum(b.received for b in pushed),
            "rejected": sum(b.rejected for b in pushed),
            "rejected_outside_gb": sum(b.outside_gb for b in pushed),
        },
    }


def _stream(connection: Connection, query: Any) -> Iterator[Any]:
    result = connection.execution_options(yield_per=5000).execute(query)
    yield from result
