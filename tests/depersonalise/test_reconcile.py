"""The reconciler finds what derived lacks, holds stale or holds too much, and repairs it."""

from __future__ import annotations

import re

from tests.depersonalise.conftest import admin, event, reader
from tests.depersonalise.test_api import load_demo, push

QUERY = "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31"


def metric(client, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    assert found, f"{name} not exported"
    return float(found.group(1))


def test_missing_stale_and_unheld_records_are_repaired_then_agree(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    push(client, fake, [event(i + 1, f"k{i}", 380100, 394100, revision=i + 1) for i in range(6)])
    # Ingest holds four records depersonalise never got, a newer revision of k0, and no k1 (its
    # delete was lost). Eight burglaries and a robbery: the robbery's cover (the 8) leaves it free
    # up to 4, so the month's total is published.
    fake.keep([event(10 + i, f"m{i}", 380100, 394100, revision=10 + i) for i in range(4)])
    fake.keep([event(20, "k0", 380100, 394100, revision=20, category="Robbery")])
    fake.records.pop("k1")
    assert client.get("/v1/reconcile", headers=admin()).json()["state"] == "never"

    report = client.post("/v1/reconcile", headers=admin())
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["state"] == "complete"
    [pair] = [p for p in body["pairs"] if p["dataset"] == "police-crime"]
    assert (pair["raw"], pair["derived"], pair["agreed"]) == (9, 6, False)
    assert (pair["redelivered"], pair["removed"]) == (5, 1)
    assert body["lag_records"] == 6 and body["disagree_since"] is not None
    assert metric(client, "csp_derived_lag_records") == 6
    assert metric(client, "csp_derived_lag_seconds") >= 0

    total = client.get(QUERY, headers=reader()).json()
    assert total["disclosure"]["records"] == 9
    table = client.get(QUERY + "&by=category", headers=reader()).json()
    robbery = [c for c in table["cells"] if c["category"] == "Robbery"]
    assert robbery and all(c["count"] in (None, 0) for c in robbery)  # one record: suppressed

    again = client.post("/v1/reconcile", headers=admin()).json()
    assert again["lag_records"] == 0 and again["disagree_since"] is None
    assert all(p["agreed"] for p in again["pairs"])
    assert metric(client, "csp_derived_lag_records") == 0
    assert metric(client, "csp_derived_lag_seconds") == 0
    assert metric(client, "csp_rebuild_progress") == 1
    assert client.get("/v1/reconcile", headers=admin()).json()["lag_records"] == 0


def test_reconcile_is_for_operators_and_reports_ingest_down(make_client) -> None:
    client, fake = make_client()
    assert client.post("/v1/reconcile", headers=reader()).status_code == 403
    fake.down = True
    body = client.post("/v1/reconcile", headers=admin()).json()
    assert body["state"] == "failed" and "ingest unreachable" in body["error"]
