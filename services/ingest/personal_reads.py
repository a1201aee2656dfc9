"""Personal-level reads of stored records: which records each provider's grants let a recipient
see, how a record shows under them, one page of them, and the log entry every read leaves."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import msgspec
from sqlalchemy import Connection, false, insert, or_, select

from services.ingest.instants import iso, utc_now
from services.ingest.tables import PERSONAL_READ, RECORD
from shared.catalogue import Dataset
from shared.grants import Slices

_decode = msgspec.json.Decoder().decode


def _day_bound(day: date | None, after: bool) -> str | None:
    """An occurred_at bound as stored text: the day's start, or the next day's for an end."""
    if day is None:
        return None
    return (day + timedelta(days=1) if after else day).isoformat() + "T00:00:00Z"


def granted_clause(scope: Slices) -> Any:
    """Records of each provider dated within one of its grants' windows."""
    clauses = []
    for provider, first, last in scope.windows():
        clause = RECORD.c.provider == provider
        low, high = _day_bound(first, False), _day_bound(last, True)
        if low is not None:
            clause = clause & (RECORD.c.occurred_at >= low)
        if high is not None:
            clause = clause & (RECORD.c.occurred_at < high)
        clauses.append(clause)
    return or_(*clauses) if clauses else false()


def granted_record(
    provider: str, occurred_at: str, data: Any, scope: Slices, columns: list[str]
) -> dict[str, Any] | None:
    """A stored record as its provider's grants show it (None when no grant covers it): a field
    outside the grant is absent, not null."""
    shown = scope.fields_for(provider, date.fromisoformat(occurred_at[:10]))
    if shown is None:
        return None
    values = _decode(data)
    values["provider"] = provider
    return {name: values.get(name) for name in columns if name == "provider" or name in shown}


def personal_page(
    connection: Connection,
    dataset: Dataset,
    scope: Slices,
    after: int,
    limit: int,
) -> tuple[list[str], list[dict[str, Any]], int | None]:
    """(columns, rows, next cursor) of one page of records the recipient may see: each provider's
    records within its grants' windows, each showing only the fields its grants name."""
    widest = scope.uniform_fields()
    columns = ["provider"] + [f for f in dataset.field_names if widest is None or f in widest]
    query = (
        select(RECORD.c.id, RECORD.c.provider, RECORD.c.occurred_at, RECORD.c.data)
        .where(RECORD.c.dataset == dataset.name, granted_clause(scope), RECORD.c.id > after)
        .order_by(RECORD.c.id)
        .limit(limit)
    )
    rows = connection.execute(query).all()
    out = [
        shown
        for row in rows
        if (shown := granted_record(row.provider, row.occurred_at, row.data, scope, columns))
        is not None
    ]
    following = rows[-1].id if len(rows) == limit else None
    return columns, out, following


def record_read(connection: Connection, **entry: Any) -> None:
    """The personal read log's entry for one read (who, what, under which agreement, how many)."""
    connection.execute(insert(PERSONAL_READ).values(at=iso(utc_now()), **entry))
