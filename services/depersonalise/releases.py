"""Releases: each answer of aggregates or records is recorded (what was asked, by whom, under
which agreement, and its disclosure figures) on the writer, in a transaction of its own, and
shown again to its recipient or operators."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from services.depersonalise.models import ReleaseRow
from services.depersonalise.service_state import now
from shared.db import table_of, write_transaction

T_RELEASE = table_of(ReleaseRow)


def release(conn: Connection, release_id: str) -> dict[str, Any] | None:
    """One recorded release: what was asked, by whom, under which agreement, and its figures."""
    row = conn.execute(select(T_RELEASE).where(T_RELEASE.c.id == release_id)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["created_at"] = found["created_at"].isoformat()
    return found


def record_release(
    engine: Engine,
    kind: str,
    dataset: str,
    agency: str,
    agreement: str | None,
    query: dict[str, Any],
    disclosure: dict[str, Any],
) -> str:
    release_id = secrets.token_hex(12)
    with write_transaction(engine) as conn:
        conn.execute(
            insert(T_RELEASE).values(
                id=release_id,
                kind=kind,
                dataset=dataset,
                agency=agency,
                agreement=agreement,
                query=query,
                disclosure=disclosure,
                created_at=now(),
            )
        )
    return release_id
