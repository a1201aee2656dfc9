"""The depersonalise app: geography layers, depersonalised records, aggregates and releases."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily

from services.depersonalise import replay
from services.depersonalise.deps import app_state
from services.depersonalise.layer_registry import load_registry
from services.depersonalise.models import Base
from services.depersonalise.reconcile import reconcile
from services.depersonalise.replay import layer_progress
from services.depersonalise.routes import internal, router
from services.depersonalise.service_state import ensure_state
from services.depersonalise.settings import Settings
from services.depersonalise.state import DepersonaliseState
from shared.app import build_app
from shared.db import make_engine, ping, prepare_schema
from shared.http import peer_tls
from shared.tokens import TokenKey, TokenVerifier

log = logging.getLogger("csp.depersonalise")


async def _ingest_answers(app: FastAPI) -> None:
    state = app_state(app)
    response = await state.ingest.get(
        f"{app.state.settings.ingest_url.rstrip('/')}/healthz", timeout=2.0
    )
    response.raise_for_status()


async def _every(seconds: float, state: DepersonaliseState, settings: Settings) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await reconcile(state, settings)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("reconcile failed", extra={"error": type(exc).__name__})


class ReconcileCollector:
    """Derived lag and rebuild progress, from this replica's last reconciliation and state."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = getattr(self.app.state, "depersonalise", None)
        report = (state.reconcile if state is not None else None) or {}
        rebuild = state.registry.rebuild if state is not None else {}
        since = report.get("disagree_since")
        figures = (
            (
                "derived_lag_records",
                "records raw and derived disagreed on",
                report.get("lag_records", 0),
            ),
            (
                "derived_lag_seconds",
                "seconds raw and derived have disagreed",
                time.time() - since if since else 0,
            ),
            (
                "reconcile_last_run_timestamp_seconds",
                "when the reconciler last ran",
                report.get("ran_at", 0),
            ),
            (
                "rebuild_progress",
                "progress of a running rebuild (1 when none runs)",
                1.0 if rebuild.get("state") != "running" else layer_progress(rebuild),
            ),
        )
        for name, help_text, value in figures:
            yield GaugeMetricFamily(f"csp_{name}", help_text, value=float(value))


async def _start(
    app: FastAPI, settings: Settings, ingest_transport: httpx.AsyncBaseTransport | None
) -> DepersonaliseState:
    """What the app holds while it runs: keys, engines, the peer client, the registry of layers;
    a rebuild that was interrupted (restart or crash) runs again from the start."""
    app.state.token_verifier = TokenVerifier.configured(
        "depersonalise", settings.internal_public_keys, settings.redis_url
    )
    token_key = TokenKey.configured("depersonalise", settings.token_key, settings.token_key_file)
    engine = make_engine(settings.database_url)
    prepare_schema(engine, Base.metadata, Path(__file__).parent / "migrations")
    ensure_state(engine)
    ingest = httpx.AsyncClient(
        timeout=settings.ingest_timeout_seconds, transport=ingest_transport, verify=peer_tls()
    )
    app.state.engine = engine
    state = DepersonaliseState(
        engine=engine,
        # Answers (cube reads, record pages) from a read replica when one is given, and always
        # from a pool of their own: a request holds its read connection while it takes a writer
        # connection (the layers' reload, the release it records), so one pool for both would
        # deadlock once as many requests as the pool holds each waited for their second.
        read_engine=make_engine(settings.read_database_url or settings.database_url),
        token_key=token_key,
        ingest=ingest,
        registry=load_registry(engine),
    )
    app.state.depersonalise = state
    if state.registry.building is not None:
        await replay.restart(state, settings)
    return state


async def _stop(
    app: FastAPI, state: DepersonaliseState, scheduled: asyncio.Task[None] | None
) -> None:
    """The running rebuild and reconciler stopped, the clients closed, the engines disposed."""
    for task in (state.rebuild_task, scheduled):
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await app.state.token_verifier.replay.close()
    await state.ingest.aclose()
    state.read_engine.dispose()
    state.engine.dispose()


def _lifespan(
    settings: Settings, ingest_transport: httpx.AsyncBaseTransport | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _start(app, settings, ingest_transport)
        scheduled = None
        if settings.reconcile_interval_seconds > 0:
            scheduled = asyncio.create_task(
                _every(settings.reconcile_interval_seconds, state, settings)
            )
        try:
            yield
        finally:
            await _stop(app, state, scheduled)

    return lifespan


def create_app(
    settings: Settings | None = None,
    *,
    ingest_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The depersonalise app; ingest's transport, when given, replaces the network (in-process
    tests of the same httpx client production uses)."""
    settings = settings or Settings()
    app = build_app(
        "depersonalise",
        lifespan=_lifespan(settings, ingest_transport),
        ready_checks=[("database", lambda a: ping(a.state.engine)), ("ingest", _ingest_answers)],
        description="Geography layers, depersonalised records, aggregates with disclosure control.",
    )
    app.state.settings = settings
    app.state.metrics_registry.register(ReconcileCollector(app))
    app.include_router(internal)
    app.include_router(router)
    return app
