"""A gateway wired to fake backends on a fresh database, over the production upstream client:
the fakes are served by uvicorn on local ports in this process and reached over aiohttp, as the
real backends are in production."""

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


class _ByPort:
    """One ASGI app answering on several local ports: each port's requests go to its own app."""

    def __init__(self, apps: dict[int, FastAPI]) -> None:
        self.apps = apps

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.apps[scope["server"][1]](scope, receive, send)


@contextlib.contextmanager
def served_apps(apps: dict[str, FastAPI]) -> Iterator[dict[str, int]]:
    """Each of ``apps`` served on a free local port (name -> port) by one uvicorn server, in a
    thread of this process."""
    if not apps:
        yield {}
        return
    sockets = {name: socket.socket() for name in apps}
    for sock in sockets.values():
        sock.bind(("127.0.0.1", 0))
    ports = {name: int(sock.getsockname()[1]) for name, sock in sockets.items()}
    dispatch = _ByPort({ports[name]: app for name, app in apps.items()})
    config = uvicorn.Config(dispatch, log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": list(sockets.values())}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        yield ports
    finally:
        server.should_exit = True
        thread.join(5)
        for sock in sockets.values():
            sock.close()


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[int]:
    """``app`` served by uvicorn on a free local port, in a thread of this process."""
    with served_apps({"app": app}) as ports:
        yield ports["app"]


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
        """``real`` backends are the caller's: reached at the ``*_url`` given in ``overrides``;
        the others are ``backends`` (new fakes by default), served here on local ports. Either way
        the gateway reaches them over its production client."""
        backends = backends or fakes.backend_apps()
        admin_key = overrides.pop("admin_key", make_key())
        ports = stack.enter_context(
            served_apps({name: app for name, app in backends.items() if name not in real})
        )
        values: dict[str, Any] = {
            "database_url": database_url("gateway") if fresh_db else db,
            "admin_key": admin_key,
            "rate_limit": "10000/second",
            "audit_checkpoint_seconds": 3600,
            **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in ports.items()},
            **overrides,
        }
        settings = Settings(**values)
        app = create_app(settings)
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
