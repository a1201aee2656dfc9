"""The proxy paths over the production aiohttp client, the fake backends served on local ports in
this process (the test hub wires them so for every gateway test; these cover each path once)."""

from __future__ import annotations

from shared.tokens import issue_token
from tests.conftest import GATEWAY_KEY
from tests.gateway.conftest import Hub, MakeHub, closed_port

AGGREGATES = "/v1/datasets/police-crime/aggregates?geography=lsoa21&period=month"
PUSH = "/v1/datasets/police-crime/records"


async def test_an_allowed_read_carries_the_decision_and_none_of_the_clients_secrets(
    hub: Hub,
) -> None:
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    sent = {
        "CSP-Internal-Token": issue_token(GATEWAY_KEY, {"sub": "gmp", "roles": ["admin"]}),
        "Connection": "x-secret",
        "X-Secret": "1",
    }
    key = await hub.issue("manchester-cc")
    answer = await hub.client.get(AGGREGATES, headers={**key, **sent})
    assert (answer.status_code, answer.json()["agreement"]) == (200, "agr-1"), answer.text
    assert "csp-record-count" not in answer.headers
    path, claims, seen = hub.depersonalise.state.seen[-1]
    assert (claims.sub, claims.level, claims.aud, claims.htu) == (
        "manchester-cc",
        "aggregate",
        "depersonalise",
        path,
    )
    assert seen["csp-internal-token"] != sent["CSP-Internal-Token"]
    assert not {"authorization", "x-secret"} & set(seen)


async def test_a_denied_read_never_reaches_the_backend(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    answer = await hub.client.get(AGGREGATES, headers=headers)
    assert answer.status_code == 403
    assert answer.json()["rule"] == "no-active-agreement"
    assert hub.depersonalise.state.seen == []


async def test_a_push_body_streams_up_and_the_answer_comes_back(hub: Hub) -> None:
    hub.allow("gmp", "push", "police-crime", None)
    csv = {"Content-Type": "text/csv", **await hub.issue("gmp")}
    rows = b"r,2024-01-01,Burglary\n" * 40_000
    answer = await hub.client.post(PUSH, content=rows, headers=csv)
    assert answer.status_code == 202, answer.text
    assert answer.json()["received"] == 40 * 22_000
    _path, claims, _seen = hub.ingest.state.seen[-1]
    assert claims.action == "push" and claims.sub == "gmp"


async def test_a_backends_problem_reaches_the_client_as_the_backend_gave_it(hub: Hub) -> None:
    headers = await hub.issue("tvp")
    answer = await hub.client.get("/v1/batches/b-1", headers=headers)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "No such batch."


async def test_the_gateways_own_peer_calls_use_the_same_client(hub: Hub) -> None:
    headers = await hub.issue("gmp")
    answer = await hub.client.get("/v1/me", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["agency"]["code"] == "gmp"
    assert answer.json()["agreements"] == [{"id": "agr-1"}]


async def test_me_names_the_key_is_audited_and_carries_the_security_headers(hub: Hub) -> None:
    headers = await hub.issue("gmp")
    answer = await hub.client.get("/v1/me", headers={**headers, "X-Request-ID": "r-me"})
    assert answer.status_code == 200, answer.text
    key_id = headers["Authorization"].split("_")[1]
    assert answer.json() == {
        "agency": {"code": "gmp"},
        "agreements": [{"id": "agr-1"}],
        "roles": ["agency"],
        "key_id": key_id,
    }
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] == "r-me"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    trail = await hub.client.get("/v1/audit", headers=hub.admin())
    mine = [e for e in trail.json()["entries"] if e["request_id"] == "r-me"]
    assert [(e["route"], e["key_id"], e["status"], e["outcome"]) for e in mine] == [
        ("/v1/me", key_id, 200, "allowed")
    ]
    head = await hub.client.head("/v1/me", headers=headers)
    assert head.status_code == 405  # GET only, as the router declares it


async def test_me_without_agreements_is_a_503_problem_and_audited(make_hub: MakeHub) -> None:
    hub = await make_hub(real=("agreements",), agreements_url=f"http://127.0.0.1:{closed_port()}")
    answer = await hub.client.get("/v1/me", headers={**hub.admin(), "X-Request-ID": "r-down"})
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("backend-unavailable")
    trail = await hub.client.get("/v1/audit", headers=hub.admin())
    mine = [e for e in trail.json()["entries"] if e["request_id"] == "r-down"]
    assert [(e["route"], e["status"], e["outcome"]) for e in mine] == [("/v1/me", 503, "error")]
