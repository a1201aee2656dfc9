"""Tables as Core objects and the small SQL helpers the ingest modules share."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from services.ingest.models import Batch, IdempotencyKey, Outbox, Postcode, Record, Rejection
from shared.db import table_of

RECORD: Table = table_of(Record)
BATCH: Table = table_of(Batch)
OUTBOX: Table = table_of(Outbox)
POSTCODE: Table = table_of(Postcode)
IDEMPOTENCY: Table = table_of(IdempotencyKey)
REJECTION: Table = table_of(Rejection)

ROW_BITS = 24


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def record_key(secret: str, provider: str, dataset: str, source_ref: str) -> str:
    """What depersonalise knows a record by: never the provider's own reference."""
    message = f"{provider}/{dataset}/{source_ref}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def insert_accepted_batch(
    connection: Connection, provider: str, dataset: str, kind: str, count: int, moment: datetime
) -> tuple[str, int]:
    """A batch the hub makes itself (retract, purge, relink) of ``count`` records: (id, seq)."""
    batch_id = uuid.uuid4().hex
    seq = connection.execute(
        insert(BATCH).values(
            batch_id=batch_id,
            dataset=dataset,
            provider=provider,
            kind=kind,
            status="accepted",
            received=count,
            accepted=count,
            created_at=iso(moment),
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    return batch_id, int(seq)


def revision_range(batch_seq: int) -> tuple[int, int]:
    return batch_seq << ROW_BITS, (batch_seq + 1) << ROW_BITS


def dialect_insert(connection: Connection, table: Table) -> Insert:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def record_upsert(connection: Connection) -> Any:
    """Insert, or replace the stored record when this one carries a higher revision."""
    statement: Any = dialect_insert(connection, RECORD)
    excluded = statement.excluded
    replaced = [
        "revision",
        "batch_seq",
        "received_at",
        "occurred_at",
        "easting",
        "northing",
        "location_source",
        "late",
        "unlisted",
        "data",
    ]
    values: dict[str, Any] = {name: excluded[name] for name in replaced}
    values["corrections"] = RECORD.c.corrections + 1
    return statement.on_conflict_do_update(
        index_elements=["provider", "dataset", "source_ref"],
        set_=values,
        where=excluded.revision > RECORD.c.revision,
    )
