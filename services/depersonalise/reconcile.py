"""The reconciler: what ingest holds raw against what depersonalise holds derived.

Per dataset x provider both sides count their records and digest their revisions
(``shared.holdings``). Where they differ, depersonalise asks ingest for that provider's records
again and applies them (only revisions newer than held are stored, so this is harmless), and drops
derived records whose revision ingest no longer holds (a retraction whose delete never arrived).
It runs on a schedule and on demand (``POST /v1/reconcile``); a running rebuild replays
everything anyway, so the reconciler waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from services.depersonalise.derivation import apply_events
from services.depersonalise.held_records import drop_unheld, held_revisions
from services.depersonalise.layer_registry import load_registry
from services.depersonalise.replay import IngestUnreachableError, _page
from services.depersonalise.settings import Settings
from services.depersonalise.state import DepersonaliseState
from shared.catalogue import load_catalogue
from shared.db import in_read_transaction
from shared.holdings import revision_digest
from shared.tokens import TokenKey, service_token

log = logging.getLogger("csp.depersonalise.reconcile")


async def reconcile(state: DepersonaliseState, settings: Settings) -> dict[str, Any]:
    """One reconciliation over every dataset; the report (also kept as ``state.reconcile``)."""
    async with state.reconcile_lock:
        report = await _run(state, settings)
    previous = state.reconcile or {}
    if report["state"] == "complete":
        agreed = report["lag_records"] == 0
        since = None if agreed else (previous.get("disagree_since") or report["ran_at"])
        report["disagree_since"] = since
    state.reconcile = report
    return report


async def _run(state: DepersonaliseState, settings: Settings) -> dict[str, Any]:
    engine = state.engine
    registry = await asyncio.to_thread(load_registry, engine, state.registry)
    started = time.time()
    base: dict[str, Any] = {"ran_at": started, "pairs": [], "lag_records": 0}
    if registry.building is not None:
        return {**base, "state": "skipped", "reason": "a rebuild is running"}
    secret = state.token_key
    url = settings.ingest_url.rstrip("/")
    catalogue = load_catalogue()
    try:
        for dataset in sorted(catalogue):
            theirs, horizon = await _holdings(state.ingest, url, secret, dataset)
            ours = await asyncio.to_thread(
                in_read_transaction, engine, held_revisions, registry.generation, dataset
            )
            for provider in sorted(set(theirs) | set(ours)):
                raw_count, raw_digest = theirs.get(provider, (0, revision_digest([])))
                derived = ours.get(provider, [])
                pair: dict[str, Any] = {
                    "dataset": dataset,
                    "provider": provider,
                    "raw": raw_count,
                    "derived": len(derived),
                    "agreed": raw_count == len(derived) and raw_digest == revision_digest(derived),
                }
                if not pair["agreed"]:
                    pair.update(
                        await _repair(
                            state, settings, catalogue, dataset, provider, set(derived), horizon
                        )
                    )
                    base["lag_records"] += pair["redelivered"] + pair["removed"]
                base["pairs"].append(pair)
    except IngestUnreachableError as exc:
        log.warning("reconcile could not reach ingest", extra={"error": str(exc)})
        return {**base, "state": "failed", "error": f"ingest unreachable: {exc}"}
    log.info(
        "reconciled",
        extra={"pairs": len(base["pairs"]), "lag_records": base["lag_records"]},
    )
    return {**base, "state": "complete", "seconds": round(time.time() - started, 3)}


async def _holdings(
    client: Any, url: str, secret: TokenKey, dataset: str
) -> tuple[dict[str, Any], int]:
    token = service_token(secret, "ingest", "GET", "/internal/holdings")
    try:
        response = await client.get(
            f"{url}/internal/holdings",
            params={"dataset": dataset},
            headers={"CSP-Internal-Token": token},
        )
    except Exception as exc:
        raise IngestUnreachableError(type(exc).__name__) from exc
    if response.status_code != 200:
        raise IngestUnreachableError(f"status {response.status_code}")
    body = response.json()
    found = {h["provider"]: (h["count"], h["digest"]) for h in body["holdings"]}
    return found, int(body["horizon"])


async def _repair(
    state: DepersonaliseState,
    settings: Settings,
    catalogue: Any,
    dataset: str,
    provider: str,
    held: set[int],
    horizon: int,
) -> dict[str, int]:
    """Re-deliver one provider's records of a dataset; drop derived ones ingest no longer has."""
    engine, url = state.engine, settings.ingest_url.rstrip("/")
    seen: set[int] = set()
    after: Any = None
    while True:
        events, after, more = await _page(
            state.ingest, url, state.token_key, dataset, after, settings.replay_page_size, provider
        )
        if events:
            registry = await asyncio.to_thread(load_registry, engine, state.registry)
            await asyncio.to_thread(
                apply_events,
                engine,
                events,
                catalogue,
                registry.targets(),
                settings.record_key_secret(),
            )
            seen.update(e.revision for e in events)
        if not more:
            break
    registry = await asyncio.to_thread(load_registry, engine, state.registry)
    removed = await asyncio.to_thread(
        drop_unheld, engine, registry.generation, catalogue[dataset], provider, seen, horizon
    )
    return {"redelivered": len(seen - held), "removed": removed}
