"""What the reconciler compares and repairs on the derived side: the revisions a generation
holds per provider, and the removal of records whose revision ingest no longer holds."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from services.depersonalise import cube
from services.depersonalise.derivation import T_RECORD
from shared.catalogue import Dataset
from shared.db import write_transaction


def held_revisions(conn: Connection, generation: int, dataset: str) -> dict[str, list[int]]:
    """Per provider, the revisions of the live derived records of a dataset."""
    found: dict[str, list[int]] = defaultdict(list)
    rows = conn.execute(
        select(T_RECORD.c.provider, T_RECORD.c.revision).where(
            (T_RECORD.c.generation == generation)
            & (T_RECORD.c.dataset == dataset)
            & (T_RECORD.c.deleted.is_(False))
        )
    )
    for provider, revision in rows:
        found[provider].append(revision)
    return dict(found)


def drop_unheld(
    engine: Engine,
    generation: int,
    spec: Dataset,
    provider: str,
    keep: set[int],
    horizon: int,
) -> int:
    """Remove live derived records of a dataset x provider whose revision ingest no longer holds
    (a retraction or purge whose delete never arrived), and their cube counts; how many went.
    Revisions from ``horizon`` up (given out after ingest was read) stay."""
    with write_transaction(engine) as conn:
        rows = conn.execute(
            select(T_RECORD.c.id, T_RECORD.c.revision).where(
                (T_RECORD.c.generation == generation)
                & (T_RECORD.c.dataset == spec.name)
                & (T_RECORD.c.provider == provider)
                & (T_RECORD.c.deleted.is_(False))
            )
        ).all()
        gone = [row_id for row_id, revision in rows if revision < horizon and revision not in keep]
        delta = cube.Delta.empty()
        for start in range(0, len(gone), 500):
            chosen = T_RECORD.c.id.in_(gone[start : start + 500])
            for row in conn.execute(select(T_RECORD).where(chosen)).mappings():
                delta.add(dict(row), spec, -1)
            conn.execute(delete(T_RECORD).where(chosen))
        cube.apply(conn, delta)
    return len(gone)
