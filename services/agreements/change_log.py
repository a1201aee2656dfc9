"""What every change to agencies and agreements writes beside itself: a history row, and a bump
of the generation counter, so every replica's decision snapshot reloads on its next decision; and
the reads of that history (an agreement's trail, the days agreements were revoked)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.agreements.models import GenerationRow, HistoryRow


def utcnow() -> datetime:
    return datetime.now(UTC)


def read_generation(engine: Engine) -> int:
    with Session(engine) as session:
        row = session.get(GenerationRow, 1)
        return row.value if row else 0


def bump_generation(session: Session) -> None:
    result = session.exec(
        update(GenerationRow)
        .where(col(GenerationRow.id) == 1)
        .values(value=GenerationRow.value + 1)
    )
    if result.rowcount == 0:
        session.add(GenerationRow(id=1, value=1))
    session.flush()


def record_history(
    session: Session, agreement_id: str, version: int, actor: str, event: str, **detail: Any
) -> None:
    session.add(
        HistoryRow(
            agreement_id=agreement_id,
            version=version,
            at=utcnow(),
            actor=actor,
            event=event,
            detail=detail,
        )
    )


def revocation_days(session: Session, agreement_ids: list[str]) -> dict[str, date]:
    """The day each of these agreements was revoked (from its history)."""
    if not agreement_ids:
        return {}
    rows = session.exec(
        select(HistoryRow.agreement_id, HistoryRow.at).where(
            col(HistoryRow.agreement_id).in_(agreement_ids), HistoryRow.event == "revoked"
        )
    )
    return {agreement_id: at.date() for agreement_id, at in rows}


def history(
    session: Session, agreement_id: str, after: int, limit: int
) -> tuple[list[HistoryRow], int | None]:
    rows = list(
        session.exec(
            select(HistoryRow)
            .where(HistoryRow.agreement_id == agreement_id, col(HistoryRow.id) > after)
            .order_by(col(HistoryRow.id))
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)
