"""Grants per provider through the running hub: two providers, two recipients (issue scenario 1).

R reads `offender-cohort` at level personal from P1 (every field) and from P2 (three fields);
P2 shares every field with R2, so it may push names. R must never see P2's names, nor P2's
`police-crime` category (R's agreement with P2 leaves it out), in records or in `by=category`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scripts.hub import Hub
from shared.identifiers import pnc_check_character
from tests.e2e.conftest import (
    ADMIN_KEY,
    agreement_terms,
    bearer,
    load_demo_layer,
    register_agencies,
    running_hub,
    wait_depersonalised,
)
from tests.e2e.conftest import agree as agree_and_sign
from tests.e2e.test_end_to_end import INSIDE_CELLS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

P1, P2, R, R2 = "g-probation", "g-police", "g-council", "g-health"
NAMES = {"surname": "Example", "forenames": "Pat", "date_of_birth": "1990-02-03"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    # Purges and erasures reach the audit chain within a second instead of a minute.
    extra = {"CSP_GATEWAY_RETENTION_AUDIT_SECONDS": "1"}
    with running_hub(tmp_path_factory.mktemp("hub"), extra) as running:
        yield running


def agree(
    client: httpx.Client,
    keys: dict[str, str],
    provider: str,
    recipient: str,
    dataset: str,
    level: str,
    fields: list[str] | None = None,
    purpose: str = "integrated-offender-management",
) -> dict[str, Any]:
    terms: dict[str, Any] = {"dataset": dataset, "level": level}
    if fields is not None:
        terms["fields"] = fields
    body = agreement_terms(
        f"{provider} to {recipient}: {dataset}",
        purpose,
        [provider],
        [recipient],
        [terms],
        retention_days=365,
    )
    return agree_and_sign(client, body, (keys[provider], keys[recipient]))


def cohort(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "source_ref": f"{prefix}-{n}",
            "occurred_at": f"2024-02-{1 + n:02d}",
            "category": "IOM",
            "pnc_id": f"10/{n + 1}{pnc_check_character(10, n + 1)}",
            **NAMES,
        }
        for n in range(count)
    ]


def crimes(prefix: str, count: int, category: str) -> list[dict[str, Any]]:
    x, y = INSIDE_CELLS[0]
    return [
        {
            "source_ref": f"{prefix}-{n}",
            "occurred_at": f"2024-01-{1 + n:02d}T12:00:00Z",
            "category": category,
            "easting": x + n,
            "northing": y + n,
        }
        for n in range(count)
    ]


def push(client: httpx.Client, dataset: str, rows: list[dict[str, Any]], key: str) -> None:
    pushed = client.post(
        f"/v1/datasets/{dataset}/records", json={"records": rows}, headers=bearer(key)
    )
    assert pushed.status_code == 202, pushed.text
    assert pushed.json()["accepted"] == len(rows), pushed.text
    wait_depersonalised(client, pushed.json()["batch_id"], key, len(rows))


def test_each_recipient_sees_each_provider_only_as_their_own_agreement_allows(hub: Hub) -> None:
    admin = bearer(ADMIN_KEY)
    with httpx.Client(base_url=hub.gateway_url, timeout=60) as client:
        agencies = ((P1, "probation"), (P2, "police"), (R, "local-authority"), (R2, "health"))
        keys = register_agencies(client, agencies)
        load_demo_layer(client, "g-grid")

        # An allow-list naming a field the dataset lacks is refused, naming it.
        bad = client.post(
            "/v1/agreements",
            json={
                "title": "typo",
                "purpose": "integrated-offender-management",
                "legal_basis": ["cda-1998-s115"],
                "providers": [P2],
                "recipients": [R],
                "datasets": [
                    {"dataset": "police-crime", "level": "aggregate", "fields": ["catgory"]}
                ],
                "start": "2024-01-01",
                "end": "2030-12-31",
            },
            headers=admin,
        )
        assert bad.status_code == 422 and "catgory" in bad.text

        narrow = ["source_ref", "occurred_at", "category"]
        a1 = agree(client, keys, P1, R, "offender-cohort", "personal")
        a2 = agree(client, keys, P2, R, "offender-cohort", "personal", narrow)
        agree(client, keys, P2, R2, "offender-cohort", "personal")
        b1 = agree(client, keys, P1, R, "police-crime", "depersonalised")
        b2 = agree(
            client,
            keys,
            P2,
            R,
            "police-crime",
            "depersonalised",
            ["occurred_at", "easting", "northing"],
        )
        agree(client, keys, P2, R2, "police-crime", "depersonalised")

        push(client, "offender-cohort", cohort("P1", 3), keys[P1])
        push(client, "offender-cohort", cohort("P2", 4), keys[P2])  # names: P2 may push them
        push(client, "police-crime", crimes("P1", 6, "Burglary"), keys[P1])
        push(client, "police-crime", crimes("P2", 7, "Robbery"), keys[P2])

        # The decision answers one grant per provider.
        decision = client.post(
            "/v1/decisions",
            json={"action": "read", "dataset": "offender-cohort", "level": "personal"},
            headers=bearer(keys[R]),
        ).json()
        grants = {g["provider"]: g for g in decision["grants"]}
        assert grants[P1]["agreement"] == a1["id"] and grants[P1]["fields"] is None
        assert grants[P2]["agreement"] == a2["id"] and grants[P2]["fields"] == sorted(narrow)
        assert grants[P2]["from"] == "2024-01-01" and grants[P2]["to"] == "2030-12-31"

        personal = client.get(
            "/v1/datasets/offender-cohort/records",
            params={"level": "personal"},
            headers=bearer(keys[R]),
        )
        assert personal.status_code == 200, personal.text
        rows = personal.json()["records"]
        assert len(rows) == 7
        for row in rows:
            if row["provider"] == P2:
                assert set(row) == {"provider", *narrow}, row
            else:
                assert row["surname"] == "Example" and row["pnc_id"]
        assert "1990-02-03" not in "".join(str(r) for r in rows if r["provider"] == P2)
        # R2's own agreement with P2 names every field.
        other = client.get(
            "/v1/datasets/offender-cohort/records",
            params={"level": "personal"},
            headers=bearer(keys[R2]),
        ).json()["records"]
        assert len(other) == 4 and all(r["surname"] == "Example" for r in other)

        records = client.get("/v1/datasets/police-crime/records", headers=bearer(keys[R]))
        assert records.status_code == 200, records.text
        listed = records.json()["records"]
        assert len(listed) == 13
        assert sorted(r.get("category") for r in listed if "category" in r) == ["Burglary"] * 6
        assert "Robbery" not in records.text
        table = client.get(
            "/v1/datasets/police-crime/aggregates",
            params={
                "geography": "g-grid",
                "period": "month",
                "from": "2024-01-01",
                "to": "2024-01-31",
                "by": "category",
            },
            headers=bearer(keys[R]),
        )
        assert table.status_code == 200, table.text
        counted = {c["category"]: c["count"] for c in table.json()["cells"] if c["count"]}
        assert counted == {"Burglary": 6, "withheld": 7}
        r2_table = client.get(
            "/v1/datasets/police-crime/aggregates",
            params={"geography": "g-grid", "period": "month", "from": "2024-01-01",
                    "to": "2024-01-31", "by": "category"},
            headers=bearer(keys[R2]),
        ).json()  # fmt: skip
        assert {c["category"]: c["count"] for c in r2_table["cells"] if c["count"]} == {
            "Robbery": 7
        }

        # The audit entry of each read names every agreement and version that governed it.
        entries = client.get(
            "/v1/audit", params={"agency": R, "limit": 1000}, headers=admin
        ).json()["entries"]
        reads = [e for e in entries if e["action"] == "read" and e["phase"] == "complete"]
        cohort_read = next(
            e for e in reads if e["dataset"] == "offender-cohort" and e["level"] == "personal"
        )
        assert set(cohort_read["providers"]) == {P1, P2, f"{a1['id']}:1", f"{a2['id']}:1"}
        crime_reads = [e for e in reads if e["dataset"] == "police-crime"]
        assert crime_reads and all(
            {f"{b1['id']}:1", f"{b2['id']}:1"} <= set(e["providers"]) for e in crime_reads
        )
        # The stateless tool: a depersonalised-level grant on the dataset, or an operator.
        tool_rows = {"records": [*crimes("T", 2, "Burglary"), {"occurred_at": "2024-02-30"}]}
        tool = client.post(
            "/v1/depersonalise", params={"dataset": "police-crime"}, json=tool_rows,
            headers=bearer(keys[R]),
        )  # fmt: skip
        assert tool.status_code == 200, tool.text
        assert len(tool.json()["records"]) == 2
        assert {e["field"] for e in tool.json()["errors"] if e["row"] == 3} >= {"occurred_at"}
        for caller, dataset in ((keys[P1], "police-crime"), (keys[R], "offender-cohort")):
            refused = client.post(
                "/v1/depersonalise", params={"dataset": dataset}, json=tool_rows,
                headers=bearer(caller),
            )  # fmt: skip
            assert refused.status_code == 403, refused.text
        by_operator = client.post(
            "/v1/depersonalise", params={"dataset": "police-crime"}, json=tool_rows, headers=admin
        )
        assert by_operator.status_code == 200, by_operator.text
        entries = client.get(
            "/v1/audit", params={"agency": R, "limit": 1000}, headers=admin
        ).json()["entries"]
        used = [e for e in entries if e["route"] == "/v1/depersonalise" and e["status"] == 200]
        assert [(e["action"], e["dataset"], e["level"], e["records"]) for e in used] == [
            ("read", "police-crime", "depersonalised", 2)
        ]
        for service in hub.services.values():
            assert service.alive(), f"{service.name} died"


def test_erasure_needs_no_agreement_in_force_and_is_audited(hub: Hub) -> None:
    """Issue scenario 4: once its agreements are revoked a provider still retracts its own
    records; an operator erases the rest on request; both reach the audit chain."""
    admin = bearer(ADMIN_KEY)
    provider, recipient = "x-police", "x-council"
    with httpx.Client(base_url=hub.gateway_url, timeout=60) as client:
        keys = register_agencies(client, ((provider, "police"), (recipient, "local-authority")))
        made = agree(client, keys, provider, recipient, "police-crime", "aggregate")
        push(client, "police-crime", crimes("X", 5, "Burglary"), keys[provider])
        revoked = client.post(f"/v1/agreements/{made['id']}/revoke", headers=admin)
        assert revoked.status_code == 200, revoked.text

        refused = client.post(
            "/v1/datasets/police-crime/records",
            json={"records": crimes("Y", 1, "Burglary")},
            headers=bearer(keys[provider]),
        )
        assert refused.status_code == 403 and refused.json()["rule"] == "agreement-revoked"
        retracted = client.delete(
            "/v1/datasets/police-crime/records/X-0", headers=bearer(keys[provider])
        )
        assert retracted.status_code == 204, retracted.text
        unknown = client.delete(
            "/v1/datasets/police-crime/records/X-404", headers=bearer(keys[provider])
        )
        assert unknown.status_code == 404
        assert unknown.json()["field"] == "source_ref" and "X-404" in unknown.json()["detail"]
        # The recipient cannot retract what it never provided.
        theirs = client.delete(
            "/v1/datasets/police-crime/records/X-1", headers=bearer(keys[recipient])
        )
        assert theirs.status_code == 403

        erased = client.post(
            "/v1/erasures",
            json={"provider": provider, "dataset": "police-crime"},
            headers=admin,
        )
        assert erased.status_code == 200, erased.text
        assert erased.json()["deleted"] == 4
        again = client.post(
            "/v1/erasures", json={"provider": provider, "dataset": "police-crime"}, headers=admin
        )
        assert again.json()["deleted"] == 0
        assert (
            client.post(
                "/v1/erasures",
                json={"provider": provider, "dataset": "police-crime"},
                headers=bearer(keys[provider]),
            ).status_code
            == 403
        )

        deadline = time.monotonic() + 30
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not found:
            entries = client.get(
                "/v1/audit", params={"dataset": "police-crime", "limit": 1000}, headers=admin
            ).json()["entries"]
            found = [e for e in entries if e["rule"] == "erasure-on-request" and e["records"]]
            time.sleep(0.5)
        assert found, "the erasure never reached the audit chain"
        assert found[0]["providers"] == [provider] and found[0]["records"] == 4
        requests = client.get("/v1/audit", params={"limit": 1000}, headers=admin).json()
        erasures = [
            e
            for e in requests["entries"]
            if e["route"] == "/v1/erasures" and e["phase"] == "complete" and e["status"] == 200
        ]
        assert [e["records"] for e in erasures] == [4, 0]
        # The provider sees the erasure of its data in its own view of the audit.
        own = client.get("/v1/audit", headers=bearer(keys[provider])).json()["entries"]
        assert any(e["rule"] == "erasure-on-request" for e in own)
        assert client.get("/v1/audit/verify", headers=admin).json()["ok"] is True
