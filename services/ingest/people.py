"""The case view: a recipient's handles for linked people, a cohort's member list, a search by
an identifier the recipient already holds, and one person's records as each grant shows them.

A handle is a keyed hash of the recipient and the person (``linkage.person_handle``), so it
names the person to that recipient only and never reveals the hub's pseudonym. Resolving one
looks at the people behind the records the recipient may read, nobody else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from sqlalchemy import Connection, select

from services.ingest.linkage_keys import person_handle
from services.ingest.personal_reads import granted_clause, granted_record
from services.ingest.tables import LINK, RECORD
from shared.catalogue import Dataset
from shared.grants import Slices

COHORT_DATASET = "offender-cohort"
_decode = msgspec.json.Decoder().decode


def _visible(dataset: str, scope: Slices) -> Any:
    return (RECORD.c.dataset == dataset) & granted_clause(scope)


def cohort_members(
    connection: Connection, key: str, recipient: str, strand: str, scope: Slices
) -> list[dict[str, Any]] | None:
    """Members of ``strand`` in the granted cohort records (None: no such strand), one entry per
    membership: the recipient's handle, joined and left."""
    query = (
        select(RECORD.c.occurred_at, RECORD.c.data, RECORD.c.provider, LINK.c.person_id)
        .join(LINK, LINK.c.record_id == RECORD.c.id)
        .where(_visible(COHORT_DATASET, scope))
        .order_by(RECORD.c.occurred_at, RECORD.c.id)
    )
    rows = connection.execute(query).all()
    members = []
    for row in rows:
        data = _decode(row.data)
        if data.get("category") != strand:
            continue
        members.append(
            {
                "person": person_handle(key, recipient, row.person_id),
                "provider": row.provider,
                "joined": row.occurred_at[:10],
                "left": (data.get("occurred_to") or None) and str(data["occurred_to"])[:10],
            }
        )
    return members or None


def visible_people(connection: Connection, scopes: Mapping[str, Slices]) -> set[int]:
    """The people behind the records the recipient may read at level personal."""
    found: set[int] = set()
    for dataset, scope in scopes.items():
        query = (
            select(LINK.c.person_id)
            .join(RECORD, LINK.c.record_id == RECORD.c.id)
            .where(_visible(dataset, scope))
            .distinct()
        )
        found.update(connection.execute(query).scalars())
    return found


def search(
    connection: Connection,
    key: str,
    recipient: str,
    field: str,
    value: str,
    scopes: Mapping[str, Slices],
) -> list[str]:
    """Handles of the visible people whose linked records carry ``field`` (pnc, cro, nhs) =
    ``value`` (normalised)."""
    people = set(
        connection.execute(
            select(LINK.c.person_id).where(LINK.c[field] == value).distinct()
        ).scalars()
    )
    return sorted(
        person_handle(key, recipient, p) for p in people & visible_people(connection, scopes)
    )


def resolve(
    connection: Connection, key: str, recipient: str, handle: str, scopes: Mapping[str, Slices]
) -> int | None:
    for person in visible_people(connection, scopes):
        if person_handle(key, recipient, person) == handle:
            return person
    return None


def person_records(
    connection: Connection,
    person: int,
    catalogue: Mapping[str, Dataset],
    scopes: Mapping[str, Slices],
) -> dict[str, list[dict[str, Any]]]:
    """Dataset → the person's records in it, each as its provider's grants show it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for dataset, scope in sorted(scopes.items()):
        columns = ["provider", *catalogue[dataset].field_names]
        query = (
            select(RECORD.c.provider, RECORD.c.occurred_at, RECORD.c.data)
            .join(LINK, LINK.c.record_id == RECORD.c.id)
            .where(_visible(dataset, scope) & (LINK.c.person_id == person))
            .order_by(RECORD.c.occurred_at, RECORD.c.id)
        )
        shown = [
            record
            for row in connection.execute(query)
            if (record := granted_record(row.provider, row.occurred_at, row.data, scope, columns))
            is not None
        ]
        if shown:
            out[dataset] = shown
    return out
