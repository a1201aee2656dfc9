"""Batch rows: a push's (its counts, its refusal reasons, how many rows were corrections), the
batches the hub makes itself (retract, purge, relink), and a batch's status as its sender sees it.
Store functions: each takes the caller's connection and never commits."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, update

from services.ingest.identity import revision_range
from services.ingest.instants import iso
from services.ingest.outcome import PushOutcome
from services.ingest.tables import BATCH, RECORD, REJECTION, inserted_id
from shared.errors import ProblemError


def insert_accepted_batch(
    connection: Connection, provider: str, dataset: str, kind: str, count: int, moment: datetime
) -> tuple[str, int]:
    """A batch the hub makes itself (retract, purge, relink) of ``count`` records: (id, seq)."""
    batch_id = uuid.uuid4().hex
    result = connection.execute(
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
    )
    return batch_id, inserted_id(result)


def insert_push_batch(
    connection: Connection,
    provider: str,
    dataset: str,
    moment: datetime,
    outcome: PushOutcome,
    status: str,
) -> int:
    """A push's batch row with the outcome's counts so far: its sequence number."""
    result = connection.execute(
        insert(BATCH).values(
            batch_id=outcome.batch_id,
            dataset=dataset,
            provider=provider,
            kind="push",
            status=status,
            **outcome.counts(),
            created_at=iso(moment),
        )
    )
    return inserted_id(result)


def update_push_batch(connection: Connection, seq: int, outcome: PushOutcome) -> None:
    """The push's final counts; accepted when it stored any row."""
    status = "accepted" if outcome.accepted else "rejected"
    connection.execute(
        update(BATCH).where(BATCH.c.seq == seq).values(status=status, **outcome.counts())
    )


def record_rejections(
    connection: Connection,
    seq: int,
    provider: str,
    dataset: str,
    moment: datetime,
    reasons: Counter[tuple[str | None, str]],
) -> None:
    """The batch's refusal reasons, counted, for the partnership report."""
    if not reasons:
        return
    connection.execute(
        insert(REJECTION),
        [
            {
                "batch_seq": seq,
                "provider": provider,
                "dataset": dataset,
                "received_at": iso(moment),
                "field": name,
                "reason": message[:200],
                "rows": rows,
            }
            for (name, message), rows in sorted(reasons.items(), key=str)
        ],
    )


def count_corrections(connection: Connection, seq: int, accepted: int) -> int:
    """Rows that replaced an earlier record, or an earlier row of the same batch."""
    start, end = revision_range(seq)
    kept, replaced = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((RECORD.c.first_batch != seq, 1), else_=0)), 0),
        ).where(RECORD.c.revision > start, RECORD.c.revision < end)
    ).one()
    return int(replaced) + (accepted - int(kept))


def batch_status(connection: Connection, batch_id: str, agency: str, admin: bool) -> dict[str, Any]:
    """A batch as its sender (or an operator) sees it; 404 for anyone else."""
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
