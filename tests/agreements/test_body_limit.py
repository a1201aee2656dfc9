"""Agreements counts a body as it streams: 413 at the first chunk over the limit, never more read
into memory, and the service answers the next request as usual."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from services.agreements.main import create_app
from services.agreements.settings import Settings
from tests.agreements.conftest import ADMIN


async def test_a_body_over_the_limit_is_refused_while_it_streams(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(max_body_bytes=4096))
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"code": "x", "name": "'
        for _ in range(10_000):  # 10 MB if it were all read
            sent.append(1)
            yield b"a" * 1000

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agreements") as client:
            streamed = await client.post("/v1/agencies", content=endless(), headers=ADMIN)
            assert streamed.status_code == 413, streamed.text
            problem: dict[str, Any] = streamed.json()
            assert problem["field"] == "body" and "4096" in problem["detail"]
            declared = await client.post(
                "/v1/agencies",
                content=b"{}",
                headers={**ADMIN, "Content-Length": "5000000", "Content-Type": "application/json"},
            )
            assert declared.status_code == 413
            fine = await client.post(
                "/v1/agencies", json={"code": "tvp", "name": "TVP", "kind": "police"}, headers=ADMIN
            )
            assert fine.status_code == 201, fine.text
    assert len(sent) < 10  # reading stopped at the limit
