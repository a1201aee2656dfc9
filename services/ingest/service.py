"""The push pipeline: rows in chunks through ``record_rows`` (validated, located, built once as
``record`` rows), bulk-written by ``storage`` (COPY on PostgreSQL), then the batch's counts, its
people linked, its one outbox row and its stored answer, all in one transaction. Plain functions
over an engine; no FastAPI here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from services.ingest.agreed_fields import check_fields, check_header
from services.ingest.batches import (
    count_corrections,
    insert_push_batch,
    record_rejections,
    update_push_batch,
)
from services.ingest.bodies import RawRow
from services.ingest.idempotency import remember
from services.ingest.identity import revision_range
from services.ingest.instants import iso, utc_now
from services.ingest.linkage import link_batch
from services.ingest.location import PostcodeLookup
from services.ingest.outcome import PushOptions, PushOutcome
from services.ingest.record_rows import RecordRows, chunks
from services.ingest.storage import RecordWriter, record_writer
from services.ingest.tables import OUTBOX, POSTCODE
from shared.db import write_transaction
from shared.errors import ProblemError
from shared.validation import CompiledDataset

__all__ = ["PushOptions", "PushOutcome", "check_fields", "check_header", "push"]


class _AtomicRollbackError(Exception):
    """Rolls back an atomic push that had errors."""


def postcode_lookup(connection: Connection) -> PostcodeLookup:
    def lookup(postcodes: set[str]) -> dict[str, tuple[float, float]]:
        found: dict[str, tuple[float, float]] = {}
        wanted = sorted(postcodes)
        for start in range(0, len(wanted), 500):
            rows = connection.execute(
                select(POSTCODE.c.postcode, POSTCODE.c.easting, POSTCODE.c.northing).where(
                    POSTCODE.c.postcode.in_(wanted[start : start + 500])
                )
            )
            found.update({pc: (east, north) for pc, east, north in rows})
        return found

    return lookup


def push(
    engine: Engine,
    compiled: CompiledDataset,
    rows: Iterator[RawRow],
    options: PushOptions,
    now: datetime | None = None,
) -> PushOutcome:
    """Validate and store a batch; the records, the outbox row, the batch and the stored answer
    commit together or not at all."""
    moment = now or utc_now()
    outcome = PushOutcome(batch_id=uuid.uuid4().hex)
    try:
        with write_transaction(engine) as connection:
            _push_in(connection, compiled, rows, options, moment, outcome)
            if options.atomic and outcome.errors_total:
                raise _AtomicRollbackError
    except _AtomicRollbackError:
        outcome.refuse_atomic()
        with write_transaction(engine) as connection:
            name = compiled.dataset.name
            seq = insert_push_batch(connection, options.provider, name, moment, outcome, "rejected")
            record_rejections(connection, seq, options.provider, name, moment, outcome.reasons)
            remember(connection, options.provider, options.idempotency, moment, outcome.answer())
    return outcome


def _store_rows(
    writer: RecordWriter,
    builder: RecordRows,
    rows: Iterator[RawRow],
    options: PushOptions,
) -> None:
    """Every chunk's accepted rows written (none once an atomic push has an error)."""
    outcome = builder.outcome
    for chunk in chunks(rows, options.chunk_rows):
        outcome.received += len(chunk)
        if outcome.received > options.max_rows:
            raise ProblemError(
                413,
                f"A batch holds at most {options.max_rows} rows; split the file.",
                slug="too-many-rows",
            )
        stored = builder.rows(chunk)
        if stored and not (options.atomic and outcome.errors_total):
            writer.write(stored)
    if not (options.atomic and outcome.errors_total):
        writer.finish()


def _push_in(
    connection: Connection,
    compiled: CompiledDataset,
    rows: Iterator[RawRow],
    options: PushOptions,
    moment: datetime,
    outcome: PushOutcome,
) -> None:
    dataset, provider = compiled.dataset, options.provider
    seq = insert_push_batch(connection, provider, dataset.name, moment, outcome, "accepted")
    writer = record_writer(connection)
    lookup = postcode_lookup(connection)

    def lookup_between_copies(postcodes: set[str]) -> dict[str, tuple[float, float]]:
        writer.wait()  # the connection is the writer thread's while it copies a chunk
        return lookup(postcodes)

    builder = RecordRows(compiled, options, outcome, seq, moment, lookup_between_copies)
    try:
        _store_rows(writer, builder, rows, options)
    finally:
        writer.close()
    if options.atomic and outcome.errors_total:
        return
    record_rejections(connection, seq, provider, dataset.name, moment, outcome.reasons)
    if not writer.all_new:
        outcome.corrections = count_corrections(connection, seq, outcome.accepted)
    update_push_batch(connection, seq, outcome)
    if outcome.accepted and options.linkage is not None and dataset.link_fields:
        # people are linked before the outbox row exists, so every event carries its person
        link_batch(connection, dataset, seq, options.linkage, moment, options.catalogue)
    if outcome.accepted:
        _queue_batch(connection, seq, provider, dataset.name, moment)
    remember(connection, provider, options.idempotency, moment, outcome.answer())


def _queue_batch(
    connection: Connection, seq: int, provider: str, dataset: str, moment: datetime
) -> None:
    """The batch's one outbox row: it stands for every record in its revision range."""
    start, end = revision_range(seq)
    values: dict[str, Any] = {
        "kind": "batch",
        "batch_seq": seq,
        "provider": provider,
        "dataset": dataset,
        "cursor": start,
        "end": end,
        "created_at": iso(moment),
    }
    connection.execute(insert(OUTBOX).values(**values))
