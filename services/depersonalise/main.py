"""The depersonalise app: geography layers, depersonalised records, aggregates and releases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.depersonalise import replay, store
from services.depersonalise.models import Base
from services.depersonalise.routes import internal, router
from services.depersonalise.settings import Settings
from shared.app import build_app
from shared.db import make_engine, ping, prepare_schema


async def _ingest_answers(app: FastAPI) -> None:
    response = await app.state.http.get(
        f"{app.state.settings.ingest_url.rstrip('/')}/healthz", timeout=2.0
    )
    response.raise_for_status()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        prepare_schema(engine, Base.metadata, Path(__file__).parent / "migrations")
        store.ensure_state(engine)
        # Tests may wire ingest in through a transport set before start.
        transport = getattr(app.state, "ingest_transport", None)
        app.state.http = httpx.AsyncClient(
            timeout=settings.ingest_timeout_seconds, transport=transport
        )
        app.state.engine = engine
        app.state.registry = store.load_registry(engine)
        app.state.rebuild_task = None
        app.state.wire_cache = {}
        if app.state.registry.building is not None:
            # A rebuild was interrupted (restart or crash): run it again from the start.
            await replay.restart(app.state)
        try:
            yield
        finally:
            task = app.state.rebuild_task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await app.state.http.aclose()
            engine.dispose()

    app = build_app(
        "depersonalise",
        lifespan=lifespan,
        ready_checks=[("database", lambda a: ping(a.state.engine)), ("ingest", _ingest_answers)],
        description="Geography layers, depersonalised records, aggregates with disclosure control.",
    )
    app.state.settings = settings
    app.include_router(internal)
    app.include_router(router)
    return app
