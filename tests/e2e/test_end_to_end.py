"""One real flow through the four processes: agencies, keys, an agreement, a push, a read."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from scripts.hub import Hub
from tests.e2e.conftest import (
    ADMIN_KEY,
    agreement_terms,
    bearer,
    create_agreement,
    load_demo_layer,
    register_agencies,
    wait_depersonalised,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INSIDE_CELLS = [(381500.0, 395500.0), (382500.0, 395500.0), (383500.0, 395500.0)]
OUTSIDE = (360500.0, 410500.0)  # in Great Britain, outside the demo grid


def records(count_inside: int, count_outside: int) -> list[dict[str, Any]]:
    rows = []
    for number in range(count_inside + count_outside):
        x, y = INSIDE_CELLS[number % 3] if number < count_inside else OUTSIDE
        rows.append(
            {
                "source_ref": f"E2E-{number:04d}",
                "occurred_at": f"2024-01-{1 + number % 28:02d}T12:00:00Z",
                "category": "Burglary",
                "easting": x + (number % 7),
                "northing": y + (number % 5),
                "location_description": "outside a named person's house",
            }
        )
    return rows


def test_one_flow_end_to_end(hub: Hub) -> None:
    admin = bearer(ADMIN_KEY)
    with httpx.Client(base_url=hub.gateway_url, timeout=60) as client:
        assert client.get("/v1/me").status_code == 401
        assert client.get("/v1/me", headers=bearer("csp_nope_wrong")).status_code == 401

        agencies = (("e2e-police", "police"), ("e2e-council", "local-authority"))
        keys = register_agencies(client, (*agencies, ("e2e-other", "other")), str.title)
        assert all(key.startswith("csp_") for key in keys.values())
        police, council, other = keys["e2e-police"], keys["e2e-council"], keys["e2e-other"]

        # An agency key cannot act as an operator.
        refused = client.post(
            "/v1/agencies",
            json={"code": "sneaky", "name": "x", "kind": "other"},
            headers=bearer(police),
        )
        assert refused.status_code == 403

        load_demo_layer(client, "e2e-grid")

        agreement = create_agreement(
            client,
            agreement_terms(
                "Police crime data for the strategic assessment",
                "strategic-assessment",
                ["e2e-police"],
                ["e2e-council"],
                [{"dataset": "police-crime", "level": "aggregate"}],
            ),
        )
        agreement_id = agreement["id"]
        assert agreement["status"] == "draft"

        push_body = {"records": records(180, 20)}
        aggregates_path = "/v1/datasets/police-crime/aggregates"
        query = {
            "geography": "e2e-grid",
            "period": "month",
            "from": "2024-01-01",
            "to": "2024-03-31",
        }

        # An unsigned agreement allows nothing.
        unsigned = client.post(
            "/v1/datasets/police-crime/records", json=push_body, headers=bearer(police)
        )
        assert unsigned.status_code == 403
        assert unsigned.headers["content-type"].startswith("application/problem+json")
        assert unsigned.json()["rule"]
        assert client.get(aggregates_path, params=query, headers=bearer(council)).status_code == 403

        client.post(f"/v1/agreements/{agreement_id}/sign", headers=bearer(police))
        partly = client.get(f"/v1/agreements/{agreement_id}", headers=bearer(police)).json()
        assert partly["status"] == "draft"
        signed = client.post(f"/v1/agreements/{agreement_id}/sign", headers=bearer(council))
        assert signed.status_code == 200, signed.text
        assert client.get(f"/v1/agreements/{agreement_id}", headers=admin).json()["status"] == (
            "active"
        )

        pushed = client.post(
            "/v1/datasets/police-crime/records", json=push_body, headers=bearer(police)
        )
        assert pushed.status_code == 202, pushed.text
        answer = pushed.json()
        assert (answer["received"], answer["accepted"], answer["rejected"]) == (200, 200, 0)
        assert "x-request-id" in pushed.headers
        batch = wait_depersonalised(client, answer["batch_id"], police, 200)
        assert batch["delivered"] == 200

        read = client.get(aggregates_path, params=query, headers=bearer(council))
        assert read.status_code == 200, read.text
        table = read.json()
        assert table["dataset"] == "police-crime"
        published = [cell["count"] for cell in table["cells"] if cell["count"] is not None]
        assert sum(published) == 180
        assert table["disclosure"]["records"] == 180
        assert table["disclosure"]["records_outside_layer"] == 20
        # Complete: every area of the layer x every month in range.
        assert len(table["cells"]) == 36 * 3
        assert all(c["count"] is None or c["count"] == 0 or c["count"] >= 5 for c in table["cells"])
        assert "location_description" not in read.text

        # A third agency with no agreement is refused both ways, with the rule named.
        for response in (
            client.post("/v1/datasets/police-crime/records", json=push_body, headers=bearer(other)),
            client.get(aggregates_path, params=query, headers=bearer(other)),
        ):
            assert response.status_code == 403
            assert response.json()["rule"] == "no-active-agreement"

        # The recipient may not read above its level, nor push.
        above = client.get("/v1/datasets/police-crime/records", headers=bearer(council))
        assert above.status_code == 403

        # Bad input: clear problems, nothing already accepted is lost.
        malformed = client.post(
            "/v1/datasets/police-crime/records",
            content=b"{not json",
            headers={**bearer(police), "Content-Type": "application/json"},
        )
        assert 400 <= malformed.status_code < 500
        assert malformed.headers["content-type"].startswith("application/problem+json")
        unknown = client.post(
            "/v1/datasets/no-such-dataset/records", json=push_body, headers=bearer(police)
        )
        assert 400 <= unknown.status_code < 500
        again = client.get(aggregates_path, params=query, headers=bearer(council)).json()
        assert sum(c["count"] for c in again["cells"] if c["count"] is not None) == 180

        for service in hub.services.values():
            assert service.alive(), f"{service.name} died"
