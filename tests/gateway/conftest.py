"""A gateway wired to fake backends through httpx.ASGITransport, on a fresh database."""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
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


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[int]:
    """``app`` served by uvicorn on a free local port, in a thread of this process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(database_url: Callable[[str], str]) -> AsyncIterator[MakeHub]:
    stack = contextlib.AsyncExitStack()
    db = database_url("gateway")

    async def make(
        *,
        fresh_db: bool = False,
        real: tuple[str, ...] = (),
        backends: dict[str, FastAPI] | None = None,
        **overrides: Any,
    ) -> Hub:
        """``real`` backends are reached over the production client at their ``*_url``;
        ``backends`` gives the fake apps (served on those ports by the caller), else new ones."""
        backends = backends or fakes.backend_apps()
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
            f"{name}_transport": httpx.ASGITransport(app=app)
            for name, app in backends.items()
            if name not in real
        }
        app = create_app(settings, **transports)
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
