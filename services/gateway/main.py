"""The gateway app: ``create_app(settings)``.

Each backend (agreements, ingest, depersonalise) is reached at its ``*_url`` over one pooled
aiohttp session, in production and in the tests alike (they serve fake backends on local ports).
What the app keeps is one ``GatewayState``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from limits import parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from starlette.middleware import Middleware

from services.gateway import audit, audit_chain, audit_sign, keys, oauth, retention_audit
from services.gateway.audit_sign import Signer
from services.gateway.decisions import DecisionCache
from services.gateway.models import Base
from services.gateway.openapi import OpenApiMerger
from services.gateway.proxy import GatewayMiddleware
from services.gateway.routes import docs_router, router
from services.gateway.settings import Settings
from services.gateway.state import GatewayState
from services.gateway.upstream import AiohttpUpstream, Upstream, call_json
from services.gateway.web import router as web_router
from shared.app import build_app, state_of
from shared.db import make_engine, ping, prepare_schema
from shared.tokens import TokenKey, issue_token

log = logging.getLogger("csp.gateway")
BACKENDS = ("agreements", "ingest", "depersonalise")


def _upstreams(settings: Settings) -> dict[str, Upstream]:
    return {
        name: AiohttpUpstream(
            getattr(settings, f"{name}_url"),
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            limit=settings.max_connections_per_backend,
        )
        for name in BACKENDS
    }


def _service_token(key: TokenKey, ttl: int) -> Callable[[], str]:
    """The gateway's own token for peer calls, reissued at half its lifetime."""
    current = ("", 0.0)

    def token() -> str:
        nonlocal current
        if time.monotonic() - current[1] > ttl / 2:
            current = (
                issue_token(key, {"sub": "gateway", "roles": ["service"]}, ttl),
                time.monotonic(),
            )
        return current[0]

    return token


def _beside_database(url: str, name: str) -> Path | None:
    """A file next to a SQLite database (var/ for ``make run``); None for other databases."""
    made = make_url(url)
    if not made.drivername.startswith("sqlite") or made.database in (None, "", ":memory:"):
        return None
    return Path(made.database).parent / name


def _rate_storage(settings: Settings) -> tuple[Storage, Callable[[], Awaitable[None]] | None]:
    """Memory by default; Redis (shared by replicas) when ``CSP_REDIS_URL`` is set."""
    if not settings.redis_url:
        return MemoryStorage(), None
    pool = redis.asyncio.ConnectionPool.from_url(settings.redis_url)
    uri = settings.redis_url.replace("redis://", "async+redis://", 1)
    # limits annotates its options as scalars, but hands them to redis-py, which takes a pool.
    options: dict[str, Any] = {"connection_pool": pool}
    storage = RedisStorage(uri, implementation="redispy", **options)
    return storage, pool.disconnect


def _write_last_used(engine: Engine, store: keys.KeyStore) -> None:
    used = store.take_last_used()
    if used:
        with engine.begin() as connection:
            keys.record_last_used(connection, used)


async def _flush_last_used(engine: Engine, store: keys.KeyStore, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(_write_last_used, engine, store)
        except Exception as exc:  # noqa: BLE001 - last-used is advisory; retry next round
            log.warning("last-used flush failed", extra={"error": type(exc).__name__})


def _prepare_store(engine: Engine, settings: Settings) -> tuple[Signer, str | None]:
    """The schema and the gateway's start-up rows, before it serves: the chain's head on its own
    (another replica starting at the same moment may have created it first), then the operators'
    key, the audit signer and the Merkle tree in one transaction. The signer, and the seed it came
    from outside the database."""
    prepare_schema(engine, Base.metadata, Path(__file__).parent / "migrations")
    with contextlib.suppress(IntegrityError), engine.begin() as connection:
        audit_chain.ensure_head(connection)
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    seed = audit_sign.configured_seed(settings.audit_signing_key, settings.audit_signing_key_file)
    with engine.begin() as connection:
        printed = keys.ensure_operator_key(connection, admin_key)
        signer = audit_sign.load_signer(connection, seed)
        audit_chain.ensure_tree(connection, signer)  # once, for a log from before the tree
    if printed:
        # Printed once, on the first start only (after it is stored); never logged.
        sys.stdout.write(f"Operators' admin key (agency ops, shown once): {printed}\n")
        sys.stdout.flush()
    if not seed:
        log.warning("audit signing key kept in the database: set CSP_GATEWAY_AUDIT_SIGNING_KEY")
    return signer, seed


def _make_state(
    settings: Settings, engine: Engine, audit_log: audit.AuditLog, upstreams: dict[str, Upstream]
) -> tuple[GatewayState, Callable[[], Awaitable[None]] | None]:
    """The app's state, and how to close its rate-limit storage."""
    token_key = TokenKey.configured("gateway", settings.token_key, settings.token_key_file)
    service_token = _service_token(token_key, settings.internal_token_ttl_seconds)
    storage, close_storage = _rate_storage(settings)
    oauth_key = oauth.load_private_key(
        settings.oauth_signing_key.get_secret_value() if settings.oauth_signing_key else None,
        settings.oauth_signing_key_file,
        _beside_database(settings.database_url, "gateway-oauth-key.pem"),
    )
    state = GatewayState(
        token_key=token_key,
        token_ttl=settings.internal_token_ttl_seconds,
        keys=keys.KeyStore(engine, settings.key_cache_seconds),
        audit=audit_log,
        decisions=DecisionCache(
            upstreams["agreements"], service_token, settings.decision_cache_seconds
        ),
        upstreams=upstreams,
        limiter=FixedWindowRateLimiter(storage),
        limits=parse_many(settings.rate_limit),
        max_body_bytes=settings.max_body_bytes,
        service_token=service_token,
        tokens=oauth.TokenIssuer(oauth_key, settings.oauth_token_ttl_seconds),
    )
    return state, close_storage


def _background(
    settings: Settings, engine: Engine, state: GatewayState
) -> list[asyncio.Task[None]]:
    """The gateway's loops, each owning its transactions: last-used times, purges into the audit
    chain (the audit writer and its checkpoints run in ``AuditLog``)."""
    tasks = [
        asyncio.create_task(
            _flush_last_used(engine, state.keys, settings.last_used_flush_seconds),
            name="last-used",
        )
    ]
    if settings.retention_audit_seconds > 0:
        purges = retention_audit.keep_taking_in(
            state.audit, state.upstreams["ingest"], state.service_token, engine,
            settings.retention_audit_seconds,
        )  # fmt: skip
        tasks.append(asyncio.create_task(purges, name="retention-audit"))
    return tasks


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        signer, seed = _prepare_store(engine, settings)
        audit_log = audit.AuditLog(
            engine,
            signer,
            enabled=settings.audit_enabled,
            batch_max=settings.audit_batch_max,
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_seconds=settings.audit_checkpoint_seconds,
        )
        audit_log.start()
        upstreams = _upstreams(settings)
        state, close_storage = _make_state(settings, engine, audit_log, upstreams)
        if seed:
            state.audit_trusted = audit_sign.trusted_keys(
                signer, settings.audit_trusted_public_keys
            )
        state.openapi = OpenApiMerger(app.openapi(), upstreams, settings.openapi_cache_seconds)
        app.state.engine = engine
        app.state.gateway = state
        tasks = _background(settings, engine, state)
        # What start-up made (modules, routes, schemas) lives as long as the process: kept out of
        # the collector's passes, which otherwise walk it again and again under load.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.gateway = None
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await asyncio.to_thread(_write_last_used, engine, state.keys)
            await audit_log.close()
            for upstream in upstreams.values():
                await upstream.close()
            if close_storage is not None:
                await close_storage()
            engine.dispose()

    return lifespan


async def _peers_answer(app: FastAPI) -> None:
    gateway = state_of(app, "gateway", GatewayState)
    for name, upstream in gateway.upstreams.items():
        status, _ = await asyncio.wait_for(
            call_json(upstream, "GET", "/healthz", gateway.service_token()), timeout=2
        )
        if status != 200:
            raise RuntimeError(f"{name} answers {status}")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = build_app(
        "gateway",
        lifespan=_lifespan(settings),
        ready_checks=[
            ("database", lambda app: ping(app.state.engine)),
            ("peers", _peers_answer),
        ],
        title="CSP information-sharing hub",
        description="Public API of the hub. Authenticate with `Authorization: Bearer <api key>`.",
        docs=False,
    )
    app.state.settings = settings
    app.include_router(router)
    app.include_router(docs_router)
    app.include_router(web_router)
    # Innermost user middleware: inside the request-id middleware, outside the router.
    app.user_middleware.append(
        Middleware(GatewayMiddleware, gateway=lambda: getattr(app.state, "gateway", None))
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "CSP-Purpose", "Idempotency-Key"],
            expose_headers=["X-Request-ID", "Warning", "Retry-After"],
        )
    return app
