"""Decisions, refusals, the forwarded token and headers, caching, size limits and a down backend."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from shared.tokens import issue_token
from tests.conftest import GATEWAY_KEY
from tests.gateway.conftest import Hub, MakeHub, closed_port
from tests.gateway.test_audit import entries

AGGREGATES = "/v1/datasets/police-crime/aggregates?geography=lsoa21&period=month"


async def test_denied_read_is_403_naming_rule_agreement_and_version(hub: Hub) -> None:
    headers = await hub.issue("tvp")
    hub.deny("tvp", "read", "police-crime", "aggregate", "level-exceeds-agreement")
    answer = await hub.client.get(AGGREGATES, headers=headers)
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["rule"] == "level-exceeds-agreement"
    assert (body["agreement"], body["version"]) == ("agr-1", 3)
    assert hub.depersonalise.state.seen == []


async def test_no_agreement_denies_by_default(hub: Hub) -> None:
    headers = await hub.issue("tvp")
    answer = await hub.client.post(
        "/v1/datasets/police-crime/records", json={"records": []}, headers=headers
    )
    assert answer.status_code == 403
    assert answer.json()["rule"] == "no-active-agreement"
    assert hub.ingest.state.seen == []


async def test_allowed_read_carries_the_decision_in_the_token_and_nothing_of_the_client(
    hub: Hub,
) -> None:
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate", warning="review overdue")
    forged = issue_token(GATEWAY_KEY, {"sub": "gmp", "roles": ["admin"]})
    answer = await hub.client.get(
        AGGREGATES,
        headers={
            **headers,
            "CSP-Internal-Token": forged,
            "Connection": "keep-alive, x-secret",
            "X-Secret": "hop",
            "X-Request-ID": "req-42",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["agreement"] == "agr-1"
    assert "csp-record-count" not in answer.headers
    assert answer.headers.get("server") != "fake"
    assert answer.headers["warning"].startswith('299 csp-hub "review overdue"')
    assert answer.headers["x-request-id"] == "req-42"
    path, claims, seen_headers = hub.depersonalise.state.seen[-1]
    assert path == "/v1/datasets/police-crime/aggregates"
    assert claims.sub == "manchester-cc" and claims.roles == ["agency"]
    assert claims.action == "read" and claims.level == "aggregate"
    assert claims.providers == ["gmp"] and claims.agreement == "agr-1" and claims.version == 3
    assert claims.request_id == "req-42" and claims.key_id
    assert claims.purpose == "strategic-assessment"
    assert "authorization" not in seen_headers
    assert "x-secret" not in seen_headers
    assert seen_headers["csp-internal-token"] != forged
    assert seen_headers["x-request-id"] == "req-42"


async def test_purpose_header_is_passed_to_the_decision(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    answer = await hub.client.get(AGGREGATES, headers={**headers, "CSP-Purpose": "licensing"})
    assert answer.status_code == 403
    assert answer.json()["rule"] == "purpose-not-agreed"
    call = hub.agreements.state.seen[-1][2]
    assert call == {
        "agency": "manchester-cc",
        "action": "read",
        "dataset": "police-crime",
        "level": "aggregate",
        "purpose": "licensing",
        "fields": None,
    }


async def test_a_level_or_purpose_agreements_refuses_is_a_422_naming_it(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    answer = await hub.client.get(
        "/v1/datasets/police-crime/records", params={"level": "x" * 40}, headers=headers
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == "level"
    answer = await hub.client.get(
        "/v1/datasets/police-crime/aggregates",
        headers={**headers, "CSP-Purpose": "p" * 101},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0] | {"message": ""} == {
        "field": "CSP-Purpose",
        "in": "header",
        "message": "",
    }


async def test_record_reads_route_by_level(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "depersonalised")
    hub.allow("manchester-cc", "read", "police-crime", "personal")
    plain = await hub.client.get("/v1/datasets/police-crime/records", headers=headers)
    assert plain.json() == {"served_by": "depersonalise"}
    personal = await hub.client.get(
        "/v1/datasets/police-crime/records?level=personal", headers=headers
    )
    assert personal.json() == {"served_by": "ingest"}
    assert hub.ingest.state.seen[-1][1].level == "personal"


async def test_decisions_are_cached_briefly_and_a_suspension_bites_within_a_second(
    hub: Hub,
) -> None:
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    answers = await asyncio.gather(
        *(hub.client.get(AGGREGATES, headers=headers) for _ in range(20))
    )
    assert {a.status_code for a in answers} == {200}
    assert hub.agreements.state.decision_calls == 1
    hub.deny("manchester-cc", "read", "police-crime", "aggregate", "agreement-suspended")
    suspended_at = time.monotonic()
    while (await hub.client.get(AGGREGATES, headers=headers)).status_code == 200:
        assert time.monotonic() - suspended_at < 1.0
        await asyncio.sleep(0.05)
    assert time.monotonic() - suspended_at < 1.0


async def test_a_refusal_is_not_cached_so_a_new_agreement_allows_at_once(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    assert (await hub.client.get(AGGREGATES, headers=headers)).status_code == 403
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    assert (await hub.client.get(AGGREGATES, headers=headers)).status_code == 200


async def test_a_change_made_through_this_replica_clears_its_permissions(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    assert (await hub.client.get(AGGREGATES, headers=headers)).status_code == 200
    hub.deny("manchester-cc", "read", "police-crime", "aggregate", "agency-suspended")
    assert (await hub.client.post("/v1/agencies", headers=hub.admin())).status_code == 200
    assert (await hub.client.get(AGGREGATES, headers=headers)).status_code == 403


ADMIN_ROUTES = [
    ("POST", "/v1/agencies"),
    ("POST", "/v1/agencies/gmp/keys"),
    ("DELETE", "/v1/agencies/gmp/keys/abcdefabcdef"),
    ("POST", "/v1/geographies/lsoa21"),
    ("POST", "/v1/postcodes"),
    ("POST", "/v1/agreements"),
    ("POST", "/v1/agreements/agr-1/suspend"),
    ("POST", "/v1/agreements/agr-1/revoke"),
    ("GET", "/v1/audit/export"),
    ("POST", "/v1/linkage/model"),
    ("GET", "/v1/linkage/reviews"),
    ("POST", "/v1/linkage/reviews/1"),
    ("GET", "/v1/linkage/quality"),
    ("POST", "/v1/linkage/quality"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_agency_key_on_operator_routes_is_403_admin_only(
    hub: Hub, method: str, path: str
) -> None:
    """OWASP API5 (broken function-level authorisation)."""
    headers = await hub.issue("gmp")
    answer = await hub.client.request(method, path, headers=headers, content=b"{}")
    assert answer.status_code == 403
    assert answer.json()["rule"] == "admin-only"
    assert hub.agreements.state.seen == [] and hub.ingest.state.seen == []


async def test_operator_reaches_admin_routes(hub: Hub) -> None:
    answer = await hub.client.post("/v1/agencies", headers=hub.admin(), json={"code": "x"})
    assert answer.status_code == 200


async def test_object_level_authorisation_rests_on_the_key_not_the_request(hub: Hub) -> None:
    """OWASP API1 (BOLA): agency B asking for agency A's batch by id."""
    owner = await hub.issue("gmp")
    other = await hub.issue("tvp")
    assert (await hub.client.get("/v1/batches/b-1", headers=owner)).status_code == 200
    forged = issue_token(GATEWAY_KEY, {"sub": "gmp", "roles": ["agency"]})
    answer = await hub.client.get(
        "/v1/batches/b-1", headers={**other, "CSP-Internal-Token": forged}
    )
    assert answer.status_code == 404


async def test_unknown_route_and_method(hub: Hub) -> None:
    headers = await hub.issue("gmp")
    assert (await hub.client.get("/v1/nothing-here", headers=headers)).status_code == 404
    answer = await hub.client.put("/v1/datasets", headers=headers)
    assert answer.status_code == 405
    assert "GET" in answer.headers["allow"]


async def test_declared_oversized_body_is_413_before_the_backend(make_hub: MakeHub) -> None:
    hub = await make_hub(max_body_bytes=1000)
    headers = await hub.issue("gmp")
    hub.allow("gmp", "push", "police-crime", None)
    answer = await hub.client.post(
        "/v1/datasets/police-crime/records",
        content=b"x" * 2000,
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert hub.ingest.state.seen == []


async def test_streamed_oversized_body_is_413(make_hub: MakeHub) -> None:
    hub = await make_hub(max_body_bytes=1000)
    headers = await hub.issue("gmp")
    hub.allow("gmp", "push", "police-crime", None)

    async def body():
        for _ in range(10):
            yield b"y" * 300

    answer = await hub.client.post(
        "/v1/datasets/police-crime/records",
        content=body(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert answer.status_code == 413


async def test_a_push_within_the_limit_is_streamed_through(hub: Hub) -> None:
    headers = await hub.issue("gmp")
    hub.allow("gmp", "push", "police-crime", None)

    async def body():
        for _ in range(50):
            yield b"z" * 10_000

    answer = await hub.client.post(
        "/v1/datasets/police-crime/records",
        content=body(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert answer.status_code == 202
    assert answer.json()["received"] == 500_000


async def test_a_down_backend_is_503_quickly(make_hub: MakeHub) -> None:
    port = closed_port()
    hub = await make_hub(
        real=("depersonalise",),
        depersonalise_url=f"http://127.0.0.1:{port}",
        connect_timeout_seconds=1.0,
    )
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "aggregate")
    started = time.monotonic()
    answer = await hub.client.get(AGGREGATES, headers=headers)
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("backend-unavailable")
    assert "Traceback" not in answer.text and str(port) not in answer.text


async def test_every_response_has_a_request_id_and_security_headers(hub: Hub) -> None:
    headers = await hub.issue("gmp")
    answers = [
        await hub.client.get("/healthz"),
        await hub.client.get("/v1/me"),
        await hub.client.get("/v1/me", headers=headers),
        await hub.client.get(AGGREGATES, headers=headers),
        await hub.client.get("/v1/nothing", headers=headers),
        await hub.client.get("/v1/datasets", headers=headers),
    ]
    for answer in answers:
        assert answer.headers["x-request-id"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "access-control-allow-origin" not in answer.headers


async def test_cors_is_closed_by_default(hub: Hub) -> None:
    answer = await hub.client.options(
        "/v1/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in answer.headers


async def test_docs_are_not_exposed_by_default_but_openapi_merges_backends(hub: Hub) -> None:
    assert (await hub.client.get("/docs")).status_code == 404
    document = (await hub.client.get("/openapi.json")).json()
    paths = document["paths"]
    assert "/v1/me" in paths and "/v1/audit/verify" in paths
    assert "/v1/datasets/{dataset}/aggregates" in paths  # from depersonalise
    assert "/v1/agencies" in paths  # from agreements
    assert not any(p.startswith("/internal") for p in paths)
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


async def test_openapi_declares_every_error_as_a_problem(hub: Hub) -> None:
    document = (await hub.client.get("/openapi.json")).json()
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert responses["default"]["content"]["application/problem+json"]["schema"] == problem
            if "422" in responses:
                assert responses["422"]["content"] == {
                    "application/problem+json": {"schema": problem}
                }, (method, path)
    assert "HTTPValidationError" not in json.dumps(document)
    audit_page = document["paths"]["/v1/audit"]["get"]["responses"]["200"]["content"]
    assert audit_page["application/json"]["schema"] == {"$ref": "#/components/schemas/AuditPage"}
    answer = await hub.client.get("/v1/audit", params={"limit": "0"}, headers=hub.admin())
    required = document["components"]["schemas"]["Problem"]["required"]
    assert answer.headers["content-type"] == "application/problem+json"
    assert set(required) <= set(answer.json())


async def test_openapi_fails_soft_when_a_backend_is_down(make_hub: MakeHub) -> None:
    hub = await make_hub(real=("ingest",), ingest_url=f"http://127.0.0.1:{closed_port()}")
    answer = await hub.client.get("/openapi.json")
    assert answer.status_code == 200
    assert "/v1/me" in answer.json()["paths"]


async def test_docs_can_be_exposed_by_setting(make_hub: MakeHub) -> None:
    hub = await make_hub(expose_docs=True)
    assert (await hub.client.get("/docs")).status_code == 200


async def test_too_many_request_headers_are_431(hub: Hub) -> None:
    headers = [("Authorization", hub.admin()["Authorization"])]
    headers += [(f"X-Filler-{n}", "x") for n in range(150)]
    answer = await hub.client.get("/v1/me", headers=headers)
    assert answer.status_code == 431
    assert answer.headers["content-type"] == "application/problem+json"
    assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 200


async def test_request_headers_over_16_kib_in_all_are_431(hub: Hub) -> None:
    answer = await hub.client.get("/v1/me", headers={**hub.admin(), "X-Filler": "x" * 17_000})
    assert answer.status_code == 431


async def test_a_cohort_query_needs_a_grant_on_the_cohort_and_carries_its_grants(hub: Hub) -> None:
    headers = await hub.issue("manchester-cc")
    cohort_query = "/v1/datasets/police-crime/aggregates?cohort=PPO&period=month"
    police = {"provider": "gmp", "agreement": "agr-1", "version": 3, "fields": None}
    hub.allow("manchester-cc", "read", "police-crime", "aggregate", grants=[police])
    refused = await hub.client.get(cohort_query, headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["rule"] == "no-active-agreement"
    assert "offender-cohort" in refused.json()["detail"]
    assert hub.depersonalise.state.seen == []
    probation = {"provider": "probation", "agreement": "agr-9", "version": 2, "fields": None}
    hub.allow(
        "manchester-cc",
        "read",
        "offender-cohort",
        "aggregate",
        providers=["probation"],
        grants=[probation],
    )
    answer = await hub.client.get(cohort_query, headers={**headers, "X-Request-ID": "r-cohort"})
    assert answer.status_code == 200, answer.text
    _, claims, _ = hub.depersonalise.state.seen[-1]
    assert claims.grants == [police] and claims.cohort_grants == [probation]
    # The audit entry names both providers and both agreements that governed the answer.
    entry = next(e for e in await entries(hub) if e["request_id"] == "r-cohort")
    assert entry["providers"] == ["gmp", "probation", "agr-1:3", "agr-9:2"]
    # Without cohort= no second decision is asked and no cohort grants travel.
    await hub.client.get(AGGREGATES, headers=headers)
    assert hub.depersonalise.state.seen[-1][1].cohort_grants is None


async def test_the_case_view_needs_a_reason_and_a_personal_grant_on_some_person_dataset(
    hub: Hub,
) -> None:
    headers = await hub.issue("manchester-cc")
    path = "/v1/people/p-0123"
    missing = await hub.client.get(path, headers=headers)
    assert missing.status_code == 422, missing.text
    assert missing.json()["field"] == "CSP-Reason"
    reason = {**headers, "CSP-Reason": "IOM case review", "X-Request-ID": "r-case"}
    refused = await hub.client.get(path, headers=reason)
    assert refused.status_code == 403 and refused.json()["rule"] == "no-active-agreement"
    assert hub.ingest.state.seen == []
    offences = {"provider": "gmp", "agreement": "agr-1", "version": 3, "fields": None}
    hub.allow("manchester-cc", "read", "offender-offence", "personal", grants=[offences])
    answer = await hub.client.get(path, headers=reason)
    assert answer.status_code == 200, answer.text
    _, claims, _ = hub.ingest.state.seen[-1]
    assert claims.level == "personal" and claims.dataset_grants == {"offender-offence": [offences]}
    entry = [e for e in await entries(hub) if e["request_id"] == "r-case"][-1]
    assert entry["reason"] == "IOM case review" and entry["providers"] == ["gmp", "agr-1:3"]
    check = await hub.client.get("/v1/audit/verify", headers=hub.admin())
    assert check.json()["ok"] is True
