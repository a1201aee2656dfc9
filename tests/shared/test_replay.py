"""The replay memory of internal tokens is shared by replicas through Redis: a state-changing
token used at one replica is refused at another; without Redis each process remembers its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import httpx
import redis

from services.agreements.main import create_app
from services.agreements.settings import Settings
from shared.tokens import HEADER, issue_token
from tests.conftest import GATEWAY_KEY

REDIS_URL = "redis://127.0.0.1:6379/0"
AGENCY = {"code": "replayed", "name": "Replayed", "kind": "police"}


async def replicas(
    stack: AsyncExitStack, url: str, redis_url: str | None
) -> AsyncIterator[httpx.AsyncClient]:
    for _ in range(2):
        app = create_app(Settings(database_url=url, redis_url=redis_url))
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://agreements")
        )


def captured() -> dict[str, str]:
    """A token as the gateway binds it to one agency creation."""
    claims = {"sub": "ops", "roles": ["agency", "admin"], "aud": "agreements", "htm": "POST",
              "htu": "/v1/agencies"}  # fmt: skip
    return {HEADER: issue_token(GATEWAY_KEY, claims, 10)}


async def test_a_token_used_at_one_replica_is_refused_at_the_other(
    database_url: Callable[[str], str],
) -> None:
    redis.Redis.from_url(REDIS_URL).ping()
    async with AsyncExitStack() as stack:
        first, second = [c async for c in replicas(stack, database_url("agreements"), REDIS_URL)]
        token = captured()
        assert (await first.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 201
        again = await second.post("/v1/agencies", json=AGENCY, headers=token)
        assert again.status_code == 401 and "already used" in again.json()["detail"]
        assert (await first.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 401


async def test_without_redis_each_replica_remembers_only_its_own(
    database_url: Callable[[str], str],
) -> None:
    async with AsyncExitStack() as stack:
        first, second = [c async for c in replicas(stack, database_url("agreements"), None)]
        token = captured()
        assert (await first.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 201
        assert (await first.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 401
        # The other process never saw it: it takes the token (and finds the agency exists).
        assert (await second.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 409


async def test_redis_gone_falls_back_to_the_process_memory(
    database_url: Callable[[str], str],
) -> None:
    async with AsyncExitStack() as stack:
        (only, _other) = [
            c async for c in replicas(stack, database_url("agreements"), "redis://127.0.0.1:1/0")
        ]
        token = captured()
        assert (await only.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 201
        assert (await only.post("/v1/agencies", json=AGENCY, headers=token)).status_code == 401
