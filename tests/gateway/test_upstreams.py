"""The proxy paths behave the same over both upstream clients: the production aiohttp client
(fake backends served on local ports in this process) and an httpx transport (no sockets)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from shared.tokens import issue_token
from tests.conftest import GATEWAY_KEY
from tests.gateway import fakes
from tests.gateway.conftest import Hub, MakeHub, served

AGGREGATES = "/v1/datasets/police-crime/aggregates?geography=lsoa21&period=month"
PUSH = "/v1/datasets/police-crime/records"


@pytest.fixture(params=["aiohttp", "transport"])
async def wired(request: pytest.FixtureRequest, make_hub: MakeHub) -> AsyncIterator[Hub]:
    backends = fakes.backend_apps()
    if request.param == "transport":
        yield await make_hub(backends=backends)
        return
    with contextlib.ExitStack() as stack:
        ports = {name: stack.enter_context(served(app)) for name, app in backends.items()}
        urls = {f"{name}_url": f"http://127.0.0.1:{port}" for name, port in ports.items()}
        yield await make_hub(real=tuple(backends), backends=backends, **urls)


async def test_an_allowed_read_carries_the_decision_and_none_of_the_clients_secrets(
    wired: Hub,
) -> None:
    wired.allow("manchester-cc", "read", "police-crime", "aggregate")
    sent = {
        "CSP-Internal-Token": issue_token(GATEWAY_KEY, {"sub": "gmp", "roles": ["admin"]}),
        "Connection": "x-secret",
        "X-Secret": "1",
    }
    key = await wired.issue("manchester-cc")
    answer = await wired.client.get(AGGREGATES, headers={**key, **sent})
    assert (answer.status_code, answer.json()["agreement"]) == (200, "agr-1"), answer.text
    assert "csp-record-count" not in answer.headers
    path, claims, seen = wired.depersonalise.state.seen[-1]
    assert (claims.sub, claims.level, claims.aud, claims.htu) == (
        "manchester-cc",
        "aggregate",
        "depersonalise",
        path,
    )
    assert seen["csp-internal-token"] != sent["CSP-Internal-Token"]
    assert not {"authorization", "x-secret"} & set(seen)


async def test_a_denied_read_never_reaches_the_backend(wired: Hub) -> None:
    headers = await wired.issue("manchester-cc")
    answer = await wired.client.get(AGGREGATES, headers=headers)
    assert answer.status_code == 403
    assert answer.json()["rule"] == "no-active-agreement"
    assert wired.depersonalise.state.seen == []


async def test_a_push_body_streams_up_and_the_answer_comes_back(wired: Hub) -> None:
    wired.allow("gmp", "push", "police-crime", None)
    csv = {"Content-Type": "text/csv", **await wired.issue("gmp")}
    rows = b"r,2024-01-01,Burglary\n" * 40_000
    answer = await wired.client.post(PUSH, content=rows, headers=csv)
    assert answer.status_code == 202, answer.text
    assert answer.json()["received"] == 40 * 22_000
    _path, claims, _seen = wired.ingest.state.seen[-1]
    assert claims.action == "push" and claims.sub == "gmp"


async def test_a_backends_problem_reaches_the_client_as_the_backend_gave_it(wired: Hub) -> None:
    headers = await wired.issue("tvp")
    answer = await wired.client.get("/v1/batches/b-1", headers=headers)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "No such batch."


async def test_the_gateways_own_peer_calls_use_the_same_client(wired: Hub) -> None:
    headers = await wired.issue("gmp")
    answer = await wired.client.get("/v1/me", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["agency"]["code"] == "gmp"
    assert answer.json()["agreements"] == [{"id": "agr-1"}]
