"""Ingest's tables as Core objects (``shared.db.table_of``), and the two statements every store
module builds the same way: the dialect's INSERT (for upserts) and the id an INSERT gave."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, CursorResult, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from services.ingest.models import (
    Batch,
    IdempotencyKey,
    LinkageKeyInUse,
    LinkageModel,
    LinkReview,
    Outbox,
    Person,
    PersonalRead,
    PersonLink,
    Postcode,
    PurgeLog,
    Record,
    Rejection,
)
from shared.db import table_of

RECORD: Table = table_of(Record)
BATCH: Table = table_of(Batch)
OUTBOX: Table = table_of(Outbox)
POSTCODE: Table = table_of(Postcode)
IDEMPOTENCY: Table = table_of(IdempotencyKey)
REJECTION: Table = table_of(Rejection)
PURGE_LOG: Table = table_of(PurgeLog)
PERSONAL_READ: Table = table_of(PersonalRead)
PERSON: Table = table_of(Person)
LINK: Table = table_of(PersonLink)
REVIEW: Table = table_of(LinkReview)
MODEL: Table = table_of(LinkageModel)
KEY_IN_USE: Table = table_of(LinkageKeyInUse)


def dialect_insert(connection: Connection, table: Table) -> Insert:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key a one-row INSERT gave."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT gave no primary key")
    return int(key[0])
