"""The ingest app: create_app(settings); engine, clients, relay and purge in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine

from services.ingest.idempotency import forget_expired_keys
from services.ingest.linkage import rekey
from services.ingest.linkage_fields import LinkageConfig, config_from
from services.ingest.linkage_routes import linkage as linkage_routes
from services.ingest.models import Base
from services.ingest.operations_routes import internal, operations, reports
from services.ingest.outbox import Relay, outbox_figures
from services.ingest.peers import AgreementsPeer
from services.ingest.people_routes import case_view
from services.ingest.retention import purge
from services.ingest.routes import batches, datasets
from services.ingest.settings import Settings, record_key_secret
from services.ingest.state import IngestState
from shared.app import build_app
from shared.catalogue import load_catalogue
from shared.db import in_read_transaction, is_sqlite, make_engine, ping, prepare_schema
from shared.http import peer_tls
from shared.tokens import TokenKey, TokenVerifier
from shared.validation import compile_dataset

log = logging.getLogger("csp.ingest")


async def _every(seconds: float, job: Any, name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed round is retried next interval
            log.warning(f"{name} failed", extra={"error": type(exc).__name__})


class OutboxCollector:
    """Outbox depth and age, read from the database when Prometheus scrapes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = getattr(self.app.state, "engine", None)
        figures = {"depth": 0.0, "pending_records": 0.0, "oldest_age_seconds": 0.0}
        if engine is not None:
            with contextlib.suppress(Exception):  # a scrape never fails on a busy database
                figures = in_read_transaction(engine, outbox_figures)
        for name, help_text in (
            ("depth", "outbox rows not yet delivered to depersonalise"),
            ("pending_records", "accepted records of those rows not yet delivered"),
            ("oldest_age_seconds", "age of the oldest outbox row not yet delivered"),
        ):
            yield GaugeMetricFamily(f"csp_outbox_{name}", help_text, value=figures[name])


def _linkage(settings: Settings) -> LinkageConfig | None:
    linkage = config_from(
        settings.linkage_key.get_secret_value() if settings.linkage_key else None,
        settings.link_accept_weight,
        settings.link_review_weight,
        settings.link_min_training_records,
        settings.link_chunk_records,
        settings.link_duckdb_memory,
    )
    if linkage is None:
        log.warning("no CSP_INGEST_LINKAGE_KEY: records are stored without person links")
    return linkage


def _background(
    settings: Settings, relay: Relay, purge_now: Callable[[], Awaitable[Any]]
) -> list[asyncio.Task[Any]]:
    """The loops that own their transactions: the outbox relay and the retention purge."""
    tasks: list[asyncio.Task[Any]] = []
    if settings.relay_enabled:
        interval, backoff = settings.relay_interval_seconds, settings.relay_backoff_max_seconds
        tasks.append(asyncio.create_task(relay.run_forever(interval, backoff)))
    if settings.purge_enabled:
        tasks.append(
            asyncio.create_task(_every(settings.purge_interval_seconds, purge_now, "purge"))
        )
    return tasks


def _clients(
    settings: Settings,
    depersonalise_transport: httpx.AsyncBaseTransport | None,
    agreements_transport: httpx.AsyncBaseTransport | None,
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """One pooled client per peer (depersonalise, agreements), closed by the lifespan."""
    timeout = httpx.Timeout(settings.relay_timeout_seconds, connect=5.0)
    depersonalise = httpx.AsyncClient(
        base_url=settings.depersonalise_url,
        transport=depersonalise_transport,
        timeout=timeout,
        verify=peer_tls(),
    )
    agreements = httpx.AsyncClient(
        base_url=settings.agreements_url,
        transport=agreements_transport,
        timeout=timeout,
        verify=peer_tls(),
    )
    return depersonalise, agreements


async def _stop(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _make_state(
    settings: Settings,
    engine: Engine,
    token_key: TokenKey,
    secret: str,
    depersonalise: httpx.AsyncClient,
    agreements: httpx.AsyncClient,
) -> IngestState:
    """What the app keeps: the catalogue, the relay, linkage, the purge round and the peer."""
    catalogue = load_catalogue(settings.catalogue_dir)
    linkage = _linkage(settings)
    relay = Relay(
        engine,
        depersonalise,
        secret,
        token_key,
        catalogue,
        settings.relay_batch_events,
        linkage_key=linkage.key if linkage else None,
    )
    peer = AgreementsPeer(agreements, token_key)

    async def purge_now() -> list[dict[str, Any]]:
        rules = await peer.retention()
        entries = await asyncio.to_thread(
            purge, engine, secret, rules, linkage=(catalogue, linkage)
        )
        await asyncio.to_thread(forget_expired_keys, engine)
        return entries

    return IngestState(
        catalogue=catalogue,
        datasets={name: compile_dataset(d) for name, d in catalogue.items()},
        relay=relay,
        linkage=linkage,
        purge_now=purge_now,
        agreement_entries=peer.agreement_entries,
        push_turns=asyncio.Semaphore(1 if is_sqlite(engine) else 64),
    )


def _lifespan(
    settings: Settings,
    depersonalise_transport: httpx.AsyncBaseTransport | None,
    agreements_transport: httpx.AsyncBaseTransport | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        verifier = TokenVerifier.configured(
            "ingest", settings.internal_public_keys, settings.redis_url
        )
        token_key = TokenKey.configured("ingest", settings.token_key, settings.token_key_file)
        secret = record_key_secret(settings)
        engine = make_engine(settings.database_url)
        prepare_schema(engine, Base.metadata, Path(__file__).parent / "migrations")
        depersonalise, agreements = _clients(
            settings, depersonalise_transport, agreements_transport
        )
        state = _make_state(settings, engine, token_key, secret, depersonalise, agreements)
        if state.linkage is not None:  # a rotated key: re-send the linked records
            await asyncio.to_thread(rekey, engine, state.linkage)
        app.state.token_verifier = verifier
        app.state.engine = engine
        app.state.ingest = state
        tasks = _background(settings, state.relay, state.purge_now)
        try:
            yield
        finally:
            await _stop(tasks)
            await depersonalise.aclose()
            await agreements.aclose()
            await verifier.replay.close()
            engine.dispose()

    return lifespan


def create_app(
    settings: Settings | None = None,
    *,
    depersonalise_transport: httpx.AsyncBaseTransport | None = None,
    agreements_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The ingest app; a peer's transport, when given, replaces the network (in-process tests)."""
    settings = settings or Settings()
    app = build_app(
        "ingest",
        lifespan=_lifespan(settings, depersonalise_transport, agreements_transport),
        ready_checks=[("database", lambda a: ping(a.state.engine))],
        description="Dataset catalogue, validated batches, raw records and the outbox.",
    )
    app.state.settings = settings
    app.state.metrics_registry.register(OutboxCollector(app))
    for router in (datasets, batches, operations, reports, internal, linkage_routes, case_view):
        app.include_router(router)
    return app
