from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from services.ingest.deps import app_state
from services.ingest.main import create_app
from services.ingest.models import Base
from services.ingest.settings import Settings
from shared.db import make_engine
from shared.tokens import HEADER, issue_token
from tests.conftest import GATEWAY_KEY
from tests.ingest.fake_depersonalise import build_receiver


def token(sub: str = "gmp", roles: list[str] | None = None, **claims: Any) -> dict[str, str]:
    body = {"sub": sub, "roles": roles or ["agency"], **claims}
    return {HEADER: issue_token(GATEWAY_KEY, body)}


@pytest.fixture
def engine(database_url: Callable[[str], str]) -> Iterator[Engine]:
    """The test database with ingest's tables, for tests that call the push path directly."""
    made = make_engine(database_url("ingest"))
    Base.metadata.create_all(made)
    yield made
    made.dispose()


@pytest.fixture
def receiver() -> FastAPI:
    return build_receiver()


Client = httpx.AsyncClient


@pytest.fixture
async def make_client(
    database_url: Callable[[str], str], receiver: FastAPI
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """An in-process ingest (lifespan run) over ASGI, its relay pointed at the fake receiver."""
    url = database_url("ingest")
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Client:
            settings = Settings(
                database_url=url,
                relay_enabled=False,
                purge_enabled=False,
                **overrides,
            )
            app = create_app(settings, depersonalise_transport=httpx.ASGITransport(app=receiver))
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ingest"
            )
            client.app = app  # type: ignore[attr-defined]
            return await stack.enter_async_context(client)

        yield make


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[Client]]) -> Client:
    return await make_client()


async def drain(client: Client) -> int:
    return int(await app_state(client.app).relay.drain())  # type: ignore[attr-defined]


def crime(ref: str, **extra: Any) -> dict[str, Any]:
    record = {
        "source_ref": ref,
        "occurred_at": "2024-01-05T22:10:00Z",
        "category": "Burglary",
        "easting": 383000.5,
        "northing": 398000.2,
    }
    record.update(extra)
    return record


@pytest.fixture
def make_client_sync(
    database_url: Callable[[str], str], receiver: FastAPI
) -> Callable[[list[str], str], list[Any]]:
    """Runs a sequence of pushes under one Idempotency-Key on a fresh in-process ingest."""
    import asyncio
    import uuid

    url = database_url("ingest")

    def run(bodies: list[str], key: str) -> list[Any]:
        async def go() -> list[Any]:
            settings = Settings(
                database_url=url,
                relay_enabled=False,
                purge_enabled=False,
            )
            app = create_app(settings)
            answers: list[Any] = []
            agency = "a" + uuid.uuid4().hex[:8]
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://ingest"
                ) as http,
            ):
                for body in bodies:
                    response = await http.post(
                        "/v1/datasets/police-crime/records",
                        json={"records": [crime(body)]},
                        headers={**token(agency), "Idempotency-Key": key},
                    )
                    answers.append(
                        response.json() if response.status_code == 202 else response.status_code
                    )
            return answers

        return asyncio.run(go())

    return run
