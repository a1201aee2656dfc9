"""Routes of the hub's own traffic: ingest's events, and the operators' reconciliation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.depersonalise.deps import (
    CatalogueDep,
    EngineDep,
    RegistryDep,
    SettingsDep,
    StateDep,
)
from services.depersonalise.derivation import apply_events
from services.depersonalise.models import EventBatch, EventsAnswer
from services.depersonalise.reconcile import reconcile
from shared.deps import AdminDep, ClaimsDep
from shared.http import require_service

internal = APIRouter(prefix="/internal", tags=["internal"])
router = APIRouter(prefix="/v1", tags=["depersonalise"])


# --- ingest → depersonalise -------------------------------------------------------------------


@internal.post("/events")
def receive_events(
    batch: EventBatch,
    claims: ClaimsDep,
    engine: EngineDep,
    registry: RegistryDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
) -> EventsAnswer:
    require_service(claims)
    results, stored = apply_events(
        engine, batch.events, catalogue, registry.targets(), settings.record_key_secret()
    )
    return EventsAnswer.model_validate({"results": results, "depersonalised": stored})


@router.post("/reconcile")
async def reconcile_now(state: StateDep, settings: SettingsDep, _admin: AdminDep) -> dict[str, Any]:
    """Compare raw (ingest) with derived records per dataset x provider now, and repair."""
    return await reconcile(state, settings)


@router.get("/reconcile")
def last_reconcile(state: StateDep, _admin: AdminDep) -> dict[str, Any]:
    """The last reconciliation of this replica (scheduled or asked for)."""
    report = state.reconcile
    if report is None:
        return {"state": "never", "pairs": [], "lag_records": 0}
    return dict(report)
