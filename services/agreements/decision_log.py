"""The log of every decision, written in batches off the request path.

The flusher (``DecisionRecorder.run``, started and stopped in ``main.py``) owns its
transactions; the readers (``recent``, ``usage``) take the request's session and never commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import func, insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.agreements.decisions import Decision, DecisionRequest
from services.agreements.models import DecisionRow
from shared.db import table_of

log = logging.getLogger("csp.agreements.decisions")

MAX_BUFFERED = 200_000
# A client-given level or purpose may be longer than its column or hold NUL, which PostgreSQL
# refuses: one such row would fail every later flush of the buffer it sits in.
DECISIONS = table_of(DecisionRow)
COLUMN_LENGTHS: dict[str, int] = {
    column.name: length
    for column in DECISIONS.columns
    if isinstance(length := getattr(column.type, "length", None), int)
}


def fit_column(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "")
    length = COLUMN_LENGTHS.get(name)
    return value[:length] if length else value


@dataclass(frozen=True)
class LoggedDecision:
    id: int
    at: datetime
    agency: str
    action: str
    dataset: str
    level: str | None
    purpose: str | None
    allow: bool
    rule: str
    agreement: str | None
    version: int | None


@dataclass(frozen=True)
class Usage:
    allowed: int = 0
    denied: int = 0
    last_at: datetime | None = None


class DecisionRecorder:
    """Buffers decision rows and writes them with one multi-row INSERT per flush."""

    def __init__(self, engine: Engine, flush_rows: int) -> None:
        self._engine = engine
        self._flush_rows = flush_rows
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._full = asyncio.Event()

    def record(
        self, request: DecisionRequest, decision: Decision, at: datetime, *, explain: bool = False
    ) -> None:
        """Buffer one decision; call from the event loop (it may wake the flusher)."""
        row = {
            "explain": explain,
            "at": at,
            "agency": fit_column("agency", request.agency),
            "action": fit_column("action", request.action),
            "dataset": fit_column("dataset", request.dataset),
            "level": fit_column("level", request.level),
            "purpose": fit_column("purpose", request.purpose),
            "allow": decision.allow,
            "rule": decision.rule,
            "agreement_id": decision.agreement,
            "version": decision.version,
        }
        with self._lock:
            self._rows.append(row)
            if len(self._rows) >= self._flush_rows:
                self._full.set()

    def flush(self) -> int:
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                with self._engine.begin() as connection:
                    connection.execute(insert(DECISIONS), rows)
            except Exception as exc:  # noqa: BLE001 - keep the rows and retry on the next flush
                log.error(
                    "decision log write failed",
                    extra={"rows": len(rows), "error": type(exc).__name__},
                )
                with self._lock:
                    self._rows = (rows + self._rows)[-MAX_BUFFERED:]
                return 0
            return len(rows)

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` seconds, or sooner when the buffer fills."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), interval)
            self._full.clear()
            await anyio.to_thread.run_sync(self.flush)


def recent(session: Session, since: datetime, agencies: Iterable[str]) -> list[LoggedDecision]:
    rows = session.exec(
        select(DecisionRow)
        .where(
            col(DecisionRow.at) >= since,
            col(DecisionRow.agency).in_(list(agencies)),
            col(DecisionRow.explain).is_(False),
        )
        .order_by(col(DecisionRow.id))
    )
    return [
        LoggedDecision(
            id=r.id or 0,
            at=r.at,
            agency=r.agency,
            action=r.action,
            dataset=r.dataset,
            level=r.level,
            purpose=r.purpose,
            allow=r.allow,
            rule=r.rule,
            agreement=r.agreement_id,
            version=r.version,
        )
        for r in rows
    ]


def usage(session: Session) -> dict[str, Usage]:
    counts: dict[str, Usage] = {}
    statement = (
        select(
            DecisionRow.agreement_id,
            DecisionRow.allow,
            func.count(),
            func.max(DecisionRow.at),
        )
        .where(col(DecisionRow.agreement_id).is_not(None), col(DecisionRow.explain).is_(False))
        .group_by(col(DecisionRow.agreement_id), col(DecisionRow.allow))
    )
    for agreement_id, allow, count, last_at in session.exec(statement):
        if agreement_id is None:
            continue
        seen = counts.get(agreement_id, Usage())
        latest = max((t for t in (seen.last_at, last_at) if t is not None), default=None)
        counts[agreement_id] = Usage(
            allowed=seen.allowed + (count if allow else 0),
            denied=seen.denied + (0 if allow else count),
            last_at=latest,
        )
    return counts


def window_start(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
