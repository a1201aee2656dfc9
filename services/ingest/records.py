"""Retractions, batch status, personal-level reads and data quality over stored records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, delete, false, insert, or_, select

from services.ingest.linkage import LinkageConfig, forget
from services.ingest.models import PersonalRead
from services.ingest.service_sql import (
    BATCH,
    OUTBOX,
    RECORD,
    insert_accepted_batch,
    iso,
    record_key,
    revision_range,
    utc_now,
)
from shared.catalogue import Dataset
from shared.db import table_of, write_transaction
from shared.errors import ProblemError
from shared.grants import Slices
from shared.periods import stored_period_label

PERSONAL_READ = table_of(PersonalRead)
_decode = msgspec.json.Decoder().decode


def delete_records(
    connection: Connection,
    secret: str,
    provider: str,
    dataset: str,
    records: list[tuple[int, str]],
    kind: str,
    moment: datetime,
) -> str:
    """Delete (id, source_ref) records of one provider and dataset, with a delete event each,
    as a batch of ``kind`` (retract or purge) in the caller's transaction; its batch id."""
    batch_id, seq = insert_accepted_batch(connection, provider, dataset, kind, len(records), moment)
    base, _ = revision_range(seq)
    ids = [record_id for record_id, _ref in records]
    forget(connection, ids, None, None, moment)
    for start in range(0, len(ids), 500):
        connection.execute(delete(RECORD).where(RECORD.c.id.in_(ids[start : start + 500])))
    if records:
        connection.execute(
            insert(OUTBOX),
            [
                {
                    "kind": "delete",
                    "batch_seq": seq,
                    "provider": provider,
                    "dataset": dataset,
                    "cursor": base | number,
                    "end": base | number,
                    "record_key": record_key(secret, provider, dataset, ref),
                    "created_at": iso(moment),
                }
                for number, (_id, ref) in enumerate(records, start=1)
            ],
        )
    return batch_id


def retract(
    engine: Engine,
    secret: str,
    provider: str,
    dataset: str,
    source_ref: str,
    linkage: tuple[dict[str, Dataset], LinkageConfig | None] | None = None,
) -> str:
    with write_transaction(engine) as connection:
        found = connection.execute(
            select(RECORD.c.id).where(
                RECORD.c.provider == provider,
                RECORD.c.dataset == dataset,
                RECORD.c.source_ref == source_ref,
            )
        ).scalar()
        if found is None:
            # The reference is the provider's own, answered only to the provider that sent it.
            raise ProblemError(
                404,
                f"No record of {dataset} with source_ref {source_ref!r} was pushed by {provider}.",
                slug="record-not-found",
                dataset=dataset,
                field="source_ref",
                source_ref=source_ref,
            )
        moment = utc_now()
        if linkage is not None:
            forget(connection, [found], linkage[0], linkage[1], moment)
        return delete_records(
            connection, secret, provider, dataset, [(found, source_ref)], "retract", moment
        )


def batch_status(engine: Engine, batch_id: str, agency: str, admin: bool) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(select(BATCH).where(BATCH.c.batch_id == batch_id)).first()
    if row is None or not (admin or row.provider == agency):
        raise ProblemError(404, "No such batch.", slug="batch-not-found", batch_id=batch_id)
    return {
        "batch_id": row.batch_id,
        "dataset": row.dataset,
        "status": row.status,
        "received": row.received,
        "accepted": row.accepted,
        "rejected": row.rejected,
        "delivered": row.delivered,
        "depersonalised": row.depersonalised,
        "kind": row.kind,
        "corrections": row.corrections,
        "unlocated": row.unlocated,
        "late": row.late,
        "created_at": row.created_at,
    }


def _day_bound(day: date | None, after: bool) -> str | None:
    """An occurred_at bound as stored text: the day's start, or the next day's for an end."""
    if day is None:
        return None
    return (day + timedelta(days=1) if after else day).isoformat() + "T00:00:00Z"


def _granted(scope: Slices) -> Any:
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


def personal_page(
    engine: Engine,
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
        .where(RECORD.c.dataset == dataset.name, _granted(scope), RECORD.c.id > after)
        .order_by(RECORD.c.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    out = [
        shown
        for row in rows
        if (shown := granted_record(row.provider, row.occurred_at, row.data, scope, columns))
        is not None
    ]
    following = rows[-1].id if len(rows) == limit else None
    return columns, out, following


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


def record_read(engine: Engine, **entry: Any) -> None:
    with engine.begin() as connection:
        connection.execute(insert(PERSONAL_READ).values(at=iso(utc_now()), **entry))


def quality(engine: Engine, dataset: Dataset, provider: str | None, period: str) -> dict[str, Any]:
    """Per period: completeness of every field, how records were located, late, corrected and
    outside-the-national-list counts; plus what batches refused for lying outside GB."""
    names = dataset.field_names
    listed = [f.name for f in dataset.fields if f.allowed]
    periods: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "records": 0,
            "filled": dict.fromkeys(names, 0),
            "geocoded": {"coordinates": 0, "postcode": 0, "none": 0},
            "late": 0,
            "corrected": 0,
            "corrections": 0,
            "outside_national_list": dict.fromkeys(listed, 0),
        }
    )
    query = select(
        RECORD.c.occurred_at,
        RECORD.c.location_source,
        RECORD.c.late,
        RECORD.c.corrections,
        RECORD.c.unlisted,
        RECORD.c.data,
    ).where(RECORD.c.dataset == dataset.name)
    batches = select(BATCH.c.outside_gb, BATCH.c.rejected, BATCH.c.received).where(
        BATCH.c.dataset == dataset.name, BATCH.c.kind == "push"
    )
    if provider is not None:
        query = query.where(RECORD.c.provider == provider)
        batches = batches.where(BATCH.c.provider == provider)
    with engine.connect() as connection:
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
                "completeness": {n: round(filled[n] / count, 4) for n in names},
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
