"""Retracting records: a provider's retraction of one record, and the deletion every retraction,
purge and erasure makes (the records, their person links, a delete event each, one batch)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from services.ingest.batches import insert_accepted_batch
from services.ingest.identity import record_key, revision_range
from services.ingest.instants import iso, utc_now
from services.ingest.linkage import forget
from services.ingest.linkage_fields import LinkageConfig
from services.ingest.tables import OUTBOX, RECORD
from shared.catalogue import Dataset
from shared.errors import ProblemError

Linkage = tuple[Mapping[str, Dataset], LinkageConfig | None]
"""The catalogue and ingest's linkage configuration (None: linkage off)."""


def delete_records(
    connection: Connection,
    secret: str,
    provider: str,
    dataset: str,
    records: list[tuple[int, str]],
    kind: str,
    moment: datetime,
    linkage: Linkage | None = None,
) -> str:
    """Delete (id, source_ref) records of one provider and dataset, with a delete event each,
    as a batch of ``kind`` (retract or purge) in the caller's transaction; its batch id. Their
    person links go, and with ``linkage`` the other records of their people are linked again."""
    batch_id, seq = insert_accepted_batch(connection, provider, dataset, kind, len(records), moment)
    base, _ = revision_range(seq)
    ids = [record_id for record_id, _ref in records]
    catalogue, config = linkage if linkage is not None else (None, None)
    forget(connection, ids, catalogue, config, moment)
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
    connection: Connection,
    secret: str,
    provider: str,
    dataset: str,
    source_ref: str,
    linkage: Linkage | None = None,
) -> str:
    """Retract the provider's record ``source_ref`` in the caller's transaction: the retraction's
    batch id; 404 when the provider holds no such record."""
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
    return delete_records(
        connection, secret, provider, dataset, [(found, source_ref)], "retract", utc_now(), linkage
    )
