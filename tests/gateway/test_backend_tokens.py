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


@pytest.mark.parametrize(("service", "path"), ROUTES)
async def test_a_bound_token_is_good_only_for_its_service_method_and_path(
    service: str, path: str, database_url: Callable[[str], str]
) -> None:
    main = importlib.import_module(f"services.{service}.main")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings = settings_module.Settings(
        database_url=database_url(service), internal_secret=INTERNAL_SECRET
    )
    app = main.create_app(settings)
    claims = {"sub": "ops", "roles": ["agency", "admin"]}
    bound = {**claims, "aud": service, "htm": "GET", "htu": path}
    other = "ingest" if service != "ingest" else "agreements"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
            for wrong in ({"aud": other}, {"htm": "DELETE"}, {"htu": path + "/elsewhere"}):
                token = issue_token(INTERNAL_SECRET, {**bound, **wrong})
                answer = await client.get(path, headers={HEADER: token})
                assert answer.status_code == 401, (wrong, answer.text)
            good = issue_token(INTERNAL_SECRET, bound)
            assert (await client.get(path, headers={HEADER: good})).status_code == 200
            assert (await client.get(path, headers={HEADER: good})).status_code == 200  # a read


def test_a_state_changing_token_is_good_once() -> None:
    from shared.tokens import TokenError, check_binding, verify_token

    token = issue_token(
        INTERNAL_SECRET,
        {"sub": "gmp", "aud": "ingest", "htm": "DELETE", "htu": "/v1/datasets/d/records/r"},
    )
    claims = verify_token(INTERNAL_SECRET, token)
    seen: dict[str, int] = {}
    check_binding(claims, "ingest", "DELETE", "/v1/datasets/d/records/r", seen)
    with pytest.raises(TokenError, match="already used"):
        check_binding(claims, "ingest", "DELETE", "/v1/datasets/d/records/r", seen)
