"""Each replica's in-memory copy of agencies and agreements, reloaded when the generation moves.

A decision then costs one primary-key read (the generation) instead of loading agreements, and a
suspension made through any replica is seen by every replica on its next decision.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import anyio
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.agreements.change_log import read_generation
from services.agreements.decisions import (
    AgencyFacts,
    Decision,
    DecisionRequest,
    agency_status_of,
    decide,
)
from services.agreements.models import GenerationRow
from services.agreements.service import StoredAgreement, read_all


@dataclass(frozen=True)
class AgencyInfo:
    code: str
    name: str
    kind: str
    status: str

    def public(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "kind": self.kind, "status": self.status}

    def facts(self) -> AgencyFacts:
        """What the decision function knows of the agency."""
        return AgencyFacts(self.code, agency_status_of(self.status))


@dataclass
class Snapshot:
    generation: int
    agencies: dict[str, AgencyInfo]
    agreements: dict[str, StoredAgreement]  # by id, in id order
    by_agency: dict[str, list[StoredAgreement]] = field(default_factory=dict)

    @cached_property
    def suspended(self) -> frozenset[str]:
        return frozenset(a.code for a in self.agencies.values() if a.status == "suspended")

    def decide(self, request: DecisionRequest, now: datetime, grace_days: int) -> Decision:
        info = self.agencies.get(request.agency)
        agency = None if info is None else info.facts()
        candidates = [s.agreement for s in self.by_agency.get(request.agency, [])]
        return decide(
            request, agency, candidates, now, suspended=self.suspended, grace_days=grace_days
        )


def build_snapshot(session: Session) -> Snapshot:
    # The generation is read first: a change landing during the load leaves the label behind,
    # so the next call reloads rather than keeping stale data under a new label.
    row = session.get(GenerationRow, 1)
    generation = row.value if row else 0
    agency_rows, stored = read_all(session)
    agencies = {a.code: AgencyInfo(a.code, a.name, a.kind, a.status) for a in agency_rows}
    ordered = dict(sorted((s.agreement.id, s) for s in stored))
    by_agency: dict[str, list[StoredAgreement]] = {}
    for item in ordered.values():
        parties = {p for v in item.agreement.versions for p in v.parties}
        for party in parties:
            by_agency.setdefault(party, []).append(item)
    return Snapshot(generation, agencies, ordered, by_agency)


class SnapshotCache:
    """The current snapshot; the generation is read again at most every ``recheck`` seconds.

    Changes made through this replica clear the wait at once (``invalidate`` after commit);
    changes made through another replica are seen within ``recheck`` seconds.
    """

    def __init__(self, engine: Engine, recheck: float) -> None:
        self._engine = engine
        self._recheck = recheck
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._checked = 0.0

    def invalidate(self) -> None:
        self._checked = 0.0

    def current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked < self._recheck:
            return snapshot
        checked = time.monotonic()
        generation = read_generation(self._engine)
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.generation != generation:
                with Session(self._engine) as session:
                    snapshot = build_snapshot(session)
                self._snapshot = snapshot
            self._checked = checked
            return snapshot

    async def current_async(self) -> Snapshot:
        """As ``current``, without a thread hop when no database read is due."""
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked < self._recheck:
            return snapshot
        return await anyio.to_thread.run_sync(self.current)
