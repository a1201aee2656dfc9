"""The route table: matching on the encoded path, and a scope for every route."""

from __future__ import annotations

import pytest

from services.gateway import routing


@pytest.mark.parametrize(
    ("raw", "ref"),
    [
        ("CR%2F2024%2F1", "CR/2024/1"),
        ("CR%252024", "CR%2024"),
        ("%2E%2E", ".."),
        ("A%2F..%2FB", "A/../B"),
        ("two%20words", "two words"),
    ],
)
def test_an_encoded_reference_stays_one_parameter(raw: str, ref: str) -> None:
    found = routing.match("DELETE", f"/v1/datasets/police-crime/records/{raw}")
    assert found is not None
    assert found.route.path == "/v1/datasets/{dataset}/records/{source_ref}"
    assert found.params == {"dataset": "police-crime", "source_ref": ref}


def test_a_decoded_slash_is_not_a_reference() -> None:
    assert routing.match("DELETE", "/v1/datasets/police-crime/records/CR/2024/1") is None


def test_every_operator_route_needs_the_admin_scope_and_data_routes_theirs() -> None:
    for route in routing.ROUTES:
        assert (route.scope == routing.ADMIN) == route.admin_only, route
        if route.action in ("push", "retract"):
            assert route.scope == routing.PUSH, route
        if route.action == "read":
            assert route.scope == routing.READ, route
    assert routing.match("POST", "/v1/agreements/a-1/sign").route.scope == routing.SIGN  # type: ignore[union-attr]


def test_the_partnership_report_is_a_push_scope_route() -> None:
    # DESIGN "Keys": push covers an agency's own batches, quality and report rows.
    found = routing.match("GET", "/v1/reports/partnership")
    assert found is not None and found.route.scope == routing.PUSH
