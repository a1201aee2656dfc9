"""The agreements app: ``create_app(settings)`` wires the database, caches and routers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.agreements.agencies import ensure_agency
from services.agreements.decision_log import DecisionRecorder
from services.agreements.models import Base
from services.agreements.reference import load_code_lists
from services.agreements.routes import routers
from services.agreements.settings import Settings
from services.agreements.snapshot import SnapshotCache
from services.agreements.state import Runtime
from shared.app import build_app
from shared.bodies import BodyLimitMiddleware
from shared.catalogue import load_catalogue
from shared.db import make_engine, ping, prepare_schema
from shared.tokens import TokenVerifier


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        verifier = TokenVerifier.configured(
            "agreements", settings.internal_public_keys, settings.redis_url
        )
        app.state.token_verifier = verifier
        engine = make_engine(settings.database_url)
        prepare_schema(engine, Base.metadata, Path(__file__).parent / "migrations")
        with Session(engine) as session:
            ensure_agency(session, settings.ops_agency, settings.ops_agency_name, "other")
            with contextlib.suppress(IntegrityError):  # another replica created it first
                session.commit()
        recorder = DecisionRecorder(engine, settings.decision_flush_rows)
        app.state.engine = engine
        app.state.agreements = Runtime(
            engine=engine,
            snapshots=SnapshotCache(engine, settings.snapshot_recheck_seconds),
            recorder=recorder,
            codes=load_code_lists(settings.reference_dir),
            catalogue=load_catalogue(settings.catalogue_dir),
        )
        flusher = asyncio.create_task(recorder.run(settings.decision_flush_seconds))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            recorder.flush()
            await verifier.replay.close()
            engine.dispose()

    app = build_app(
        "agreements",
        lifespan=lifespan,
        ready_checks=[("database", lambda app: ping(app.state.engine))],
        description="Agencies, information sharing agreements and the decision on every request.",
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    for router in routers:
        app.include_router(router)
    return app
