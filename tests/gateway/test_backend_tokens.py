"""Backends trust only the gateway: no token or an expired one is 401 (token replay fails)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import httpx
import pytest

from shared.tokens import HEADER, issue_token
from tests.conftest import INTERNAL_SECRET

ROUTES = [
    ("agreements", "/v1/agencies"),
    ("ingest", "/v1/datasets"),
    ("depersonalise", "/v1/geographies"),
]


@pytest.mark.parametrize(("service", "path"), ROUTES)
async def test_a_backend_refuses_calls_without_a_valid_gateway_token(
    service: str, path: str, database_url: Callable[[str], str]
) -> None:
    try:
        main = importlib.import_module(f"services.{service}.main")
        settings_module = importlib.import_module(f"services.{service}.settings")
    except ImportError:
        pytest.skip(f"services.{service} is not built yet")
    settings = settings_module.Settings(
        database_url=database_url(service), internal_secret=INTERNAL_SECRET
    )
    app = main.create_app(settings)
    claims = {"sub": "ops", "roles": ["agency", "admin"]}
    expired = issue_token(INTERNAL_SECRET, claims, ttl_seconds=-60)
    forged = issue_token("not-the-shared-secret", claims)
    valid = issue_token(INTERNAL_SECRET, claims)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
            assert (await client.get(path)).status_code == 401
            for token in (expired, forged, valid[:-4] + "AAAA"):
                answer = await client.get(path, headers={HEADER: token})
                assert answer.status_code == 401, (service, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
            assert (await client.get(path, headers={HEADER: valid})).status_code == 200
