"""Backends trust only the callers they expect, by their public keys: no token, an expired or
forged one, one from a service that does not call this backend, or a peer service speaking for an
agency is 401; a state-changing token is good once."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.replay import ReplayMemory
from shared.tokens import CALLERS, HEADER, TokenKey, TokenVerifier, issue_token, service_token
from tests.conftest import GATEWAY_KEY, TEST_KEYS

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
    settings = settings_module.Settings(database_url=database_url(service))
    app = main.create_app(settings)
    claims = {"sub": "ops", "roles": ["agency", "admin"]}
    expired = issue_token(GATEWAY_KEY, claims, ttl_seconds=-60)
    forged = issue_token(TokenKey("gateway", Ed25519PrivateKey.generate()), claims)
    valid = issue_token(GATEWAY_KEY, claims)
    # A compromised peer holds its own key: it cannot speak for an agency or an operator, and a
    # service that never calls this backend cannot call it at all.
    peer = next(name for name in CALLERS[service] if name != "gateway")
    as_agency = issue_token(TEST_KEYS.token_key(peer), claims)
    stranger = next(name for name in ("ingest", "depersonalise") if name not in CALLERS[service])
    from_stranger = service_token(TEST_KEYS.token_key(stranger), service)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
            assert (await client.get(path)).status_code == 401
            for token in (expired, forged, valid[:-4] + "AAAA", as_agency, from_stranger):
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
    settings = settings_module.Settings(database_url=database_url(service))
    app = main.create_app(settings)
    claims = {"sub": "ops", "roles": ["agency", "admin"]}
    bound = {**claims, "aud": service, "htm": "GET", "htu": path}
    other = "ingest" if service != "ingest" else "agreements"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as client:
            for wrong in ({"aud": other}, {"htm": "DELETE"}, {"htu": path + "/elsewhere"}):
                token = issue_token(GATEWAY_KEY, {**bound, **wrong})
                answer = await client.get(path, headers={HEADER: token})
                assert answer.status_code == 401, (wrong, answer.text)
            good = issue_token(GATEWAY_KEY, bound)
            assert (await client.get(path, headers={HEADER: good})).status_code == 200
            assert (await client.get(path, headers={HEADER: good})).status_code == 200  # a read


async def test_a_state_changing_token_is_good_once() -> None:
    from shared.tokens import TokenError, accepted_callers

    token = issue_token(
        GATEWAY_KEY,
        {"sub": "gmp", "aud": "ingest", "htm": "DELETE", "htu": "/v1/datasets/d/records/r"},
    )
    verifier = TokenVerifier(
        "ingest", accepted_callers("ingest", TEST_KEYS.public_keys), ReplayMemory()
    )
    await verifier.check(token, "DELETE", "/v1/datasets/d/records/r")
    with pytest.raises(TokenError, match="already used"):
        await verifier.check(token, "DELETE", "/v1/datasets/d/records/r")
