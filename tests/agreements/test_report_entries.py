"""The agreements the partnership report lists: every one for operators' reports, an agency's own
otherwise, with status and review state; services only."""

from __future__ import annotations

from tests.agreements.conftest import ADMIN, SERVICE, Hub, days


async def test_report_entries_name_status_review_and_parties(hub: Hub) -> None:
    signed = await hub.active(review_by=days(30))
    draft = await hub.agreement(recipients=["salford-cc"], title="Draft for Salford")
    every = (await hub.client.get("/internal/agreements", headers=SERVICE)).json()
    assert {e["id"]: e["status"] for e in every} == {signed["id"]: "active", draft["id"]: "draft"}
    entry = next(e for e in every if e["id"] == signed["id"])
    assert entry["review_by"] == days(30) and entry["review_state"] == "current"
    assert entry["providers"] == ["gmp"] and entry["recipients"] == ["manchester-cc"]
    assert entry["datasets"] == [{"dataset": "police-crime", "level": "aggregate"}]
    salford = await hub.client.get("/internal/agreements?agency=salford-cc", headers=SERVICE)
    assert [e["id"] for e in salford.json()] == [draft["id"]]
    assert (await hub.client.get("/internal/agreements", headers=ADMIN)).status_code == 403
