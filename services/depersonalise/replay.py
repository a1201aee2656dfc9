"""Rebuilding derived records by a replay from ingest after a layer or snap layer changes.

Depersonalise keeps no precise points, so the only way to give old records the codes of a new layer
is to ask ingest (which holds the raw records under retention) for them again. The rebuild writes
the next generation while the current one keeps being served; if ingest cannot be reached the new
generation is dropped, the old answers stay, and the state says why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from services.depersonalise import generations
from services.depersonalise.derivation import apply_events
from services.depersonalise.layer_registry import Registry, load_registry
from services.depersonalise.models import Event
from services.depersonalise.service_state import now, set_progress
from services.depersonalise.settings import Settings
from services.depersonalise.state import DepersonaliseState
from shared.catalogue import Dataset, load_catalogue
from shared.db import in_read_transaction
from shared.tokens import TokenKey, service_token

log = logging.getLogger("csp.depersonalise.replay")


def layer_progress(rebuild: dict[str, Any]) -> float:
    """How far the rebuild that will serve a pending layer is, from 0 to 1 (1 once served)."""
    if rebuild.get("state") == "complete":
        return 1.0
    total, processed = rebuild.get("total") or 0, rebuild.get("processed") or 0
    if rebuild.get("state") != "running" or total <= 0:
        return 0.0
    return round(min(processed / total, 0.99), 3)


def retry_after(rebuild: dict[str, Any], moment: datetime | None = None) -> str:
    """Seconds a client should wait before asking again, from the rebuild's pace so far (1-60)."""
    processed, total = rebuild.get("processed") or 0, rebuild.get("total") or 0
    try:
        started = datetime.fromisoformat(rebuild["started_at"])
    except (KeyError, TypeError, ValueError):
        return "5"
    elapsed = ((moment or datetime.now(UTC)) - started).total_seconds()
    if rebuild.get("state") != "running" or processed <= 0 or elapsed <= 0:
        return "5"
    remaining = max(total - processed, 0) / (processed / elapsed)
    return str(int(min(max(remaining, 1), 60)))


class ReplayPage(BaseModel):
    """A page of ``GET /internal/records``: its events and the cursor of the next page."""

    events: list[Event] = []
    next: Any = None


class IngestUnreachableError(Exception):
    """Ingest did not answer the replay (down, refusing, or a malformed page)."""


def cached_registry(engine: Engine) -> Callable[[], Registry]:
    """A loader of the registry that keeps the last one: layers are parsed again only when a
    load or another replica changed them, not on every page of a replay."""
    held: list[Registry] = []

    def load() -> Registry:
        registry = load_registry(engine, held[-1] if held else None)
        held[:] = [registry]
        return registry

    return load


async def restart(state: DepersonaliseState, settings: Settings) -> asyncio.Task[dict[str, Any]]:
    """Start a rebuild on this replica, cancelling one already running here (the app's state
    holds the running task, the writer, the peer client and the key its calls are signed by)."""
    running = state.rebuild_task
    if running is not None and not running.done():
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    task = asyncio.create_task(
        rebuild(
            state.engine,
            state.ingest,
            settings.ingest_url,
            state.token_key,
            load_catalogue(),
            settings.replay_page_size,
            cached_registry(state.engine),
            settings.replay_retry_seconds,
            record_keys=settings.record_key_secret(),
        )
    )
    state.rebuild_task = task
    return task


async def rebuild(
    engine: Engine,
    client: httpx.AsyncClient,
    ingest_url: str,
    secret: TokenKey,
    catalogue: dict[str, Dataset],
    page_size: int,
    registry_loader: Callable[[], Registry],
    retry_seconds: float = 0.0,
    *,
    record_keys: bytes,
) -> dict[str, Any]:
    """Replay every dataset from ingest into the next generation, then serve it.

    A page ingest does not answer is asked again with backoff for up to ``retry_seconds`` (ingest
    restarting mid-rebuild), so the rebuild completes by itself once ingest is back."""
    building, progress = await _open(engine, registry_loader)
    if progress["total"] == 0:
        # Nothing derived yet: no replay needed, the new layers are served at once.
        progress.update(state="complete", finished_at=now().isoformat(), replayed=False)
        await asyncio.to_thread(generations.activate, engine, building, progress)
        return progress
    replay = _Replay(
        engine,
        (client, ingest_url, secret),
        catalogue,
        page_size,
        registry_loader,
        retry_seconds,
        record_keys,
        building,
        progress,
    )
    try:
        for name in sorted(catalogue):
            await replay.dataset(name)
            progress["datasets_done"].append(name)
    except IngestUnreachableError as exc:
        failed = {
            **progress,
            "state": "failed",
            "error": f"ingest unreachable: {exc}",
            "finished_at": now().isoformat(),
        }
        log.warning("rebuild failed", extra={"processed": progress["processed"]})
        return await _abandon(engine, failed)
    except Exception as exc:  # noqa: BLE001 - old answers stay served; the state says why
        return await _failed(engine, progress, exc)
    try:
        # Replayed records were not counted one by one: the new cube is one aggregation.
        await asyncio.to_thread(generations.recount_cube, engine, building, catalogue)
        await asyncio.to_thread(generations.analyze_generation, engine, building)
    except Exception as exc:  # noqa: BLE001 - old answers stay served; the state says why
        return await _failed(engine, progress, exc)
    progress.update(state="complete", finished_at=now().isoformat(), replayed=True)
    await asyncio.to_thread(generations.activate, engine, building, progress)
    log.info("rebuild complete", extra={"processed": progress["processed"]})
    return progress


async def _open(
    engine: Engine, registry_loader: Callable[[], Registry]
) -> tuple[int, dict[str, Any]]:
    """The generation the rebuild writes, and its progress, saved as it starts: the records
    served now are what the replay is expected to bring back."""
    building = await asyncio.to_thread(generations.start_building, engine)
    registry = await asyncio.to_thread(registry_loader)
    held = await asyncio.to_thread(
        in_read_transaction, engine, generations.live_records, registry.generation
    )
    progress: dict[str, Any] = {
        "state": "running",
        "generation": building,
        "processed": 0,
        "total": held,
        "datasets_done": [],
        "started_at": now().isoformat(),
    }
    await asyncio.to_thread(set_progress, engine, dict(progress))
    return building, progress


async def _failed(engine: Engine, progress: dict[str, Any], exc: Exception) -> dict[str, Any]:
    log.error("rebuild failed", extra={"error": type(exc).__name__})
    return await _abandon(engine, {**progress, "state": "failed", "error": type(exc).__name__})


async def _abandon(engine: Engine, failed: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(generations.abandon, engine, failed)
    return failed


@dataclass
class _Replay:
    """One rebuild's replay: ingest's pages of each dataset applied to the building generation."""

    engine: Engine
    ingest: tuple[httpx.AsyncClient, str, TokenKey]  # client, address, the key tokens are made by
    catalogue: dict[str, Dataset]
    page_size: int
    registry_loader: Callable[[], Registry]
    retry_seconds: float
    keys: bytes
    building: int
    progress: dict[str, Any]
    analysed: int = 0

    def __post_init__(self) -> None:
        self.analysed = self.page_size

    async def dataset(self, name: str) -> None:
        """Every page of one dataset, the statistics refreshed as the new partition grows."""
        after: Any = None
        while True:
            events, after, more = await _page_with_retries(
                self.engine,
                self.progress,
                self.retry_seconds,
                *self.ingest,
                name,
                after,
                self.page_size,
            )
            if events:
                await self.apply(events)
            if not more:
                return

    async def apply(self, events: list[Event]) -> None:
        registry = await asyncio.to_thread(self.registry_loader)
        targets = [(self.building, registry.building_layers(), registry.building_snap())]
        await asyncio.to_thread(
            partial(apply_events, count=False),
            self.engine,
            events,
            self.catalogue,
            targets,
            self.keys,
        )
        self.progress["processed"] += len(events)
        if self.progress["processed"] >= self.analysed * 2:
            # Statistics as the new partition grows (each time it doubles).
            self.analysed = self.progress["processed"]
            await asyncio.to_thread(generations.analyze_generation, self.engine, self.building)
        await asyncio.to_thread(set_progress, self.engine, dict(self.progress))


async def _page_with_retries(
    engine: Engine,
    progress: dict[str, Any],
    retry_seconds: float,
    *page: Any,
) -> tuple[list[Event], Any, bool]:
    deadline = asyncio.get_running_loop().time() + retry_seconds
    pause = 0.25
    while True:
        try:
            found = await _page(*page)
        except IngestUnreachableError as exc:
            if asyncio.get_running_loop().time() + pause > deadline:
                raise
            if progress.get("waiting") is None:
                progress["waiting"] = f"ingest unreachable ({exc}); retrying"
                await asyncio.to_thread(set_progress, engine, dict(progress))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        if progress.pop("waiting", None) is not None:
            await asyncio.to_thread(set_progress, engine, dict(progress))
        return found


async def _page(
    client: httpx.AsyncClient,
    ingest_url: str,
    secret: TokenKey,
    dataset: str,
    after: Any,
    limit: int,
    provider: str | None = None,
) -> tuple[list[Event], Any, bool]:
    """One page of ``GET /internal/records``: events, the next cursor, whether more follow."""
    params: dict[str, Any] = {"dataset": dataset, "limit": limit}
    if after is not None:
        params["after"] = after
    if provider is not None:
        params["provider"] = provider
    token = service_token(secret, "ingest", "GET", "/internal/records")
    try:
        response = await client.get(
            f"{ingest_url.rstrip('/')}/internal/records",
            params=params,
            headers={"CSP-Internal-Token": token},
        )
    except httpx.HTTPError as exc:
        raise IngestUnreachableError(type(exc).__name__) from exc
    if response.status_code != 200:
        # A 404 too: finishing with no records would drop every derived record the old layers had.
        raise IngestUnreachableError(f"status {response.status_code}")
    try:
        # Parsed and validated in one pass over the bytes, not through Python dicts first.
        body = ReplayPage.model_validate_json(response.content)
    except ValueError as exc:
        raise IngestUnreachableError("malformed page") from exc
    events = body.events
    if "next" in body.model_fields_set:
        return events, body.next, body.next is not None and bool(events)
    cursor = events[-1].event_id if events else None
    return events, cursor, len(events) >= limit
