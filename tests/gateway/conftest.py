"""A gateway wired to fake backends through httpx.ASGITransport, on a fresh database."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.gateway.main import create_app
from services.gateway.settings import Settings
from tests.gateway import fakes


def make_key() -> str:
    return f"csp_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


@dataclass
class Hub:
    client: httpx.AsyncClient
    app: FastAPI
    settings: Settings
    admin_key: str
    agreements: FastAPI
    ingest: FastAPI
    depersonalise: FastAPI

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    async def issue(self, agency: str) -> dict[str, str]:
        answer = await self.client.post(f"/v1/agencies/{agency}/keys", headers=self.admin())
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['key']}"}

    def allow(
        self, agency: str, action: str, dataset: str, level: str | None, **extra: Any
    ) -> None:
        self.agreements.state.decisions[(agency, action, dataset, level)] = fakes.allow(**extra)

    def deny(self, agency: str, action: str, dataset: str, level: str | None, rule: str) -> None:
        self.agreements.state.decisions[(agency, action, dataset, level)] = {
            **fakes.DENY,
            "rule": rule,
            "agreement": "agr-1",
            "version": 3,
        }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(database_url: Callable[[str], str]) -> AsyncIterator[MakeHub]:
    stack = contextlib.AsyncExitStack()
    db = database_url("gateway")

    async def make(*, fresh_db: bool = False, real: tuple[str, ...] = (), **overrides: Any) -> Hub:
        backends = {
            "agreements": fakes.agreements_app(),
            "ingest": fakes.ingest_app(),
            "depersonalise": fakes.depersonalise_app(),
        }
        admin_key = overrides.pop("admin_key", make_key())
        values: dict[str, Any] = {
            "database_url": database_url("gateway") if fresh_db else db,
            "admin_key": admin_key,
            "rate_limit": "10000/second",
            "audit_checkpoint_seconds": 3600,
            **overrides,
        }
        settings = Settings(**values)
        transports: dict[str, httpx.AsyncBaseTransport] = {
            name: httpx.ASGITransport(app=app) for name, app in backends.items() if name not in real
        }
        app = create_app(settings, transports)
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://gateway",
            )
        )
        return Hub(client, app, settings, admin_key, **backends)

    async with stack:
        yield make


@pytest.fixture
async def hub(make_hub: MakeHub) -> Hub:
    return await make_hub()
