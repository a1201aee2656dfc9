"""Every error a service answers is RFC 9457 problem+json naming the field and the reason."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import BaseModel

from shared.app import build_app
from shared.errors import ProblemError


class Agency(BaseModel):
    code: str
    kind: str


def make_app() -> Any:
    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield

    app = build_app("example", lifespan=lifespan)

    @app.post("/agencies")
    async def create(agency: Agency) -> Agency:
        return agency

    @app.get("/refuse")
    async def refuse() -> None:
        raise ProblemError(403, "No agreement.", slug="forbidden", rule="no-active-agreement")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret record contents")

    return app


async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, path, **kwargs)


async def test_validation_errors_name_each_field() -> None:
    response = await call("POST", "/agencies", json={"code": 5})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {e["field"] for e in body["errors"]} == {"code", "kind"}
    assert body["status"] == 422 and body["type"].endswith("validation-failed")


async def test_bodies_that_are_not_json_name_the_body() -> None:
    for content in (
        b"{not json",
        b'{"code": "\xff"}',
        b'{"code": ' + b"[" * 10_000 + b"]" * 10_000,
    ):
        response = await call(
            "POST", "/agencies", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), content[:20]
        assert response.headers["content-type"] == "application/problem+json"


async def test_refusals_carry_their_rule_and_failures_hide_internals() -> None:
    refused = await call("GET", "/refuse")
    assert refused.status_code == 403 and refused.json()["rule"] == "no-active-agreement"
    failed = await call("GET", "/boom")
    assert failed.status_code == 500
    assert "secret" not in failed.text and "Traceback" not in failed.text
    assert failed.headers["content-type"] == "application/problem+json"


async def test_unknown_routes_and_request_ids() -> None:
    missing = await call("GET", "/nowhere", headers={"X-Request-ID": "abc123"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["x-request-id"] == "abc123"
