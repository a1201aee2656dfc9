"""The agreements API in-process: every agreement state × every kind of caller, and each route."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest

from shared.catalogue import load_catalogue
from tests.agreements.conftest import (
    ADMIN,
    SERVICE,
    Hub,
    agreement_body,
    as_agency,
    days,
    token,
)

PROVIDER, RECIPIENT, STRANGER = "gmp", "manchester-cc", "salford-cc"


async def _state(hub: Hub, state: str) -> dict[str, Any]:
    """Make an agreement in ``state``; answer its id and what reads and decisions must show."""
    dates = {
        "not-started": {"start": days(5), "review_by": days(100)},
        "review-grace": {"start": days(-100), "review_by": days(-10)},
        "review-overdue": {"start": days(-100), "review_by": days(-40)},
        "expired": {"start": days(-400), "end": days(-1), "review_by": days(-200)},
    }.get(state, {})
    made = await hub.agreement(**dates)
    if state == "partly-signed":
        await hub.client.post(f"/v1/agreements/{made['id']}/sign", headers=as_agency(PROVIDER))
    elif state != "draft":
        await hub.sign_all(made)
    act = {"suspended": "suspend", "revoked": "revoke"}.get(state)
    if act:
        answer = await hub.client.post(f"/v1/agreements/{made['id']}/{act}", headers=ADMIN)
        assert answer.status_code == 200
    if state == "agency-suspended":
        answer = await hub.client.post(f"/v1/agencies/{PROVIDER}/suspend", headers=ADMIN)
        assert answer.json()["status"] == "suspended"
    if state == "superseded":
        changed = agreement_body(datasets=[{"dataset": "police-crime", "level": "depersonalised"}])
        answer = await hub.client.put(f"/v1/agreements/{made['id']}", json=changed, headers=ADMIN)
        assert answer.status_code == 200 and answer.json()["version"] == 2
        await hub.sign_all(answer.json())
    return {"id": made["id"]}


STATES = {
    # state: (status shown, rule for the recipient's aggregate read, version cited)
    "draft": ("draft", "no-active-agreement", 1),
    "partly-signed": ("draft", "no-active-agreement", 1),
    "not-started": ("draft", "agreement-not-started", 1),
    "active": ("active", "allowed", 1),
    "review-grace": ("active", "allowed", 1),
    "review-overdue": ("active", "review-overdue", 1),
    "expired": ("expired", "agreement-expired", 1),
    "suspended": ("suspended", "agreement-suspended", 1),
    "revoked": ("revoked", "agreement-revoked", 1),
    "superseded": ("active", "allowed", 2),
    "agency-suspended": ("active", "agency-suspended", 1),
}


@pytest.mark.parametrize("state", list(STATES))
async def test_every_state_for_every_caller(hub: Hub, state: str) -> None:
    made = await _state(hub, state)
    shown, rule, cited = STATES[state]
    path = f"/v1/agreements/{made['id']}"
    client = hub.client

    for caller in (ADMIN, as_agency(PROVIDER), as_agency(RECIPIENT)):
        answer = await client.get(path, headers=caller)
        assert answer.status_code == 200 and answer.json()["status"] == shown
        assert (await client.get(f"{path}/history", headers=caller)).status_code == 200
    stranger = as_agency(STRANGER)
    for route in (path, f"{path}/history"):
        answer = await client.get(route, headers=stranger)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("application/problem+json")
    listed = await client.get("/v1/agreements", headers=stranger)
    assert listed.json()["items"] == []
    sign = await client.post(f"{path}/sign", headers=stranger)
    assert sign.status_code in (403, 409)  # revoked agreements refuse everyone with 409

    for party in (PROVIDER, RECIPIENT, STRANGER):
        for act in ("suspend", "reinstate", "revoke"):
            answer = await client.post(f"{path}/{act}", headers=as_agency(party))
            assert answer.status_code == 403 and answer.json()["rule"] == "admin-only"
        answer = await client.put(path, json=agreement_body(), headers=as_agency(party))
        assert answer.status_code == 403
        answer = await client.post(
            f"{path}/dry-run", json=agreement_body() | {"days": 7}, headers=as_agency(party)
        )
        assert answer.status_code == 403
    agency_calls_internal = await client.post(
        "/internal/decisions",
        json={"agency": RECIPIENT, "action": "read", "dataset": "police-crime"},
        headers=ADMIN,
    )
    assert agency_calls_internal.status_code == 403

    decision = await hub.decide(RECIPIENT, level="aggregate")
    assert decision["rule"] == rule and decision["allow"] is (rule == "allowed")
    if rule not in ("allowed", "agency-suspended"):
        assert (decision["agreement"], decision["version"]) == (made["id"], cited)
    if rule == "allowed":
        assert decision["version"] == cited and decision["providers"] == [PROVIDER]
        assert (decision["warning"] is not None) is (state == "review-grace")
    for agency, action in ((STRANGER, "read"), (RECIPIENT, "push"), (PROVIDER, "read")):
        assert not (await hub.decide(agency, action=action, level="aggregate"))["allow"]
    push = await hub.decide(PROVIDER, action="push")
    assert push["allow"] is (rule == "allowed")
    explained = await client.post(
        "/v1/decisions",
        json={"action": "read", "dataset": "police-crime", "level": "aggregate"},
        headers=as_agency(RECIPIENT),
    )
    assert explained.json() == decision


async def test_superseded_version_and_pending_amendment(hub: Hub) -> None:
    made = await hub.active()
    path = f"/v1/agreements/{made['id']}"
    personal = agreement_body(
        datasets=[{"dataset": "police-crime", "level": "personal"}],
        purpose="integrated-offender-management",
    )
    amended = (await hub.client.put(path, json=personal, headers=ADMIN)).json()
    assert (amended["version"], amended["status"], amended["in_force_version"]) == (2, "draft", 1)
    # The old version stays in force until every party signs the new one.
    assert (await hub.decide(RECIPIENT, level="aggregate"))["version"] == 1
    assert (await hub.decide(RECIPIENT, level="personal"))["rule"] == "level-exceeds-agreement"
    current = (await hub.client.get(path, headers=ADMIN)).json()
    assert (current["version"], current["status"], current["latest_version"]) == (1, "active", 2)
    await hub.client.post(f"{path}/sign", headers=as_agency(PROVIDER))
    assert (await hub.decide(RECIPIENT, level="personal"))["allow"] is False
    await hub.client.post(f"{path}/sign", headers=as_agency(RECIPIENT))
    decision = await hub.decide(RECIPIENT, level="personal")
    assert decision["allow"] and decision["version"] == 2
    old = (await hub.client.get(f"{path}?version=1", headers=ADMIN)).json()
    assert old["status"] == "superseded"
    events = (await hub.client.get(f"{path}/history", headers=ADMIN)).json()["items"]
    assert [e["event"] for e in events] == [
        "created",
        "signed",
        "signed",
        "amended",
        "signed",
        "signed",
    ]
    assert [e["version"] for e in events] == [1, 1, 1, 2, 2, 2]


async def test_history_pages(hub: Hub) -> None:
    made = await hub.active()
    path = f"/v1/agreements/{made['id']}/history"
    first = (await hub.client.get(f"{path}?limit=2", headers=ADMIN)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await hub.client.get(f"{path}?limit=2&cursor={first['next_cursor']}", headers=ADMIN)
    assert [e["event"] for e in rest.json()["items"]] == ["signed"]
    assert rest.json()["next_cursor"] is None


async def test_create_answers_the_design_shape(hub: Hub) -> None:
    body = agreement_body()
    answer = await hub.client.post("/v1/agreements", json=body, headers=ADMIN)
    assert answer.status_code == 201
    made = answer.json()
    assert {k: made[k] for k in body} == {
        **body,
        "datasets": [{"dataset": "police-crime", "level": "aggregate", "fields": None}],
    }
    assert made["id"] and made["version"] == 1 and made["status"] == "draft"
    assert made["signatures"] == [] and made["type"] == "one-way"
    assert [p["role"] for p in made["parties"]] == ["provider", "recipient"]
    forbidden = await hub.client.post("/v1/agreements", json=body, headers=as_agency(PROVIDER))
    assert forbidden.status_code == 403


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"purpose": "curiosity"}, "purpose"),
        ({"legal_basis": ["made-up"]}, "legal_basis[0]"),
        ({"recipients": ["nobody-here"]}, "recipients[0]"),
        ({"end": days(-30)}, "end"),
        (
            {
                "datasets": [{"dataset": "police-crime", "level": "personal"}],
                "legal_basis": ["cda-1998-s17a"],
            },
            "datasets[0].level",
        ),
        ({"datasets": [{"dataset": "no-such-data", "level": "aggregate"}]}, "datasets[0].dataset"),
    ],
)
async def test_invalid_agreement_is_a_problem_naming_the_field(
    hub: Hub, changes: dict, field: str
) -> None:
    answer = await hub.client.post("/v1/agreements", json=agreement_body(**changes), headers=ADMIN)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert field in [e["field"] for e in problem["errors"]]
    assert field in problem["detail"]


async def test_unknown_member_and_wrong_type_are_refused(hub: Hub) -> None:
    answer = await hub.client.post(
        "/v1/agreements", json=agreement_body(colour="blue", start="soon"), headers=ADMIN
    )
    assert answer.status_code == 422
    assert {e["field"] for e in answer.json()["errors"]} == {"colour", "start"}


async def test_signing(hub: Hub) -> None:
    made = await hub.agreement()
    path = f"/v1/agreements/{made['id']}/sign"
    first = await hub.client.post(
        path, json={"signatory": "A. Chief, SIRO"}, headers=as_agency(PROVIDER)
    )
    again = await hub.client.post(
        path, json={"signatory": "Someone else"}, headers=as_agency(PROVIDER)
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["signatures"] == first.json()["signatures"]
    assert first.json()["signatures"][0]["signatory"] == "A. Chief, SIRO"
    assert first.json()["pending_signatures"] == [RECIPIENT]
    assert (await hub.client.post(path, headers=as_agency(STRANGER))).status_code == 403
    assert (await hub.client.post(path, headers=ADMIN)).status_code == 403
    missing = await hub.client.post("/v1/agreements/isa-nothing/sign", headers=as_agency(PROVIDER))
    assert missing.status_code == 404
    done = await hub.client.post(path, headers=as_agency(RECIPIENT))
    assert done.json()["status"] == "active"
    await hub.client.post(f"/v1/agreements/{made['id']}/revoke", headers=ADMIN)
    assert (await hub.client.post(path, headers=as_agency(PROVIDER))).status_code == 409
    reinstate = await hub.client.post(f"/v1/agreements/{made['id']}/reinstate", headers=ADMIN)
    assert reinstate.status_code == 409


async def test_suspend_and_reinstate_take_effect_at_once(hub: Hub) -> None:
    made = await hub.active()
    assert (await hub.decide(RECIPIENT, level="aggregate"))["allow"]
    await hub.client.post(f"/v1/agreements/{made['id']}/suspend", headers=ADMIN)
    assert (await hub.decide(RECIPIENT, level="aggregate"))["rule"] == "agreement-suspended"
    await hub.client.post(f"/v1/agreements/{made['id']}/reinstate", headers=ADMIN)
    assert (await hub.decide(RECIPIENT, level="aggregate"))["allow"]
    await hub.client.post(f"/v1/agencies/{RECIPIENT}/suspend", headers=ADMIN)
    assert (await hub.decide(RECIPIENT, level="aggregate"))["rule"] == "agency-suspended"
    await hub.client.post(f"/v1/agencies/{RECIPIENT}/reinstate", headers=ADMIN)
    assert (await hub.decide(RECIPIENT, level="aggregate"))["allow"]
    history = await hub.client.get(f"/v1/agreements/{made['id']}/history", headers=ADMIN)
    assert [(e["event"], e["detail"]) for e in history.json()["items"][-4:]] == [
        ("suspended", {}),
        ("reinstated", {}),
        ("party-suspended", {"agency": RECIPIENT}),
        ("party-reinstated", {"agency": RECIPIENT}),
    ]


async def test_agencies(hub: Hub) -> None:
    client = hub.client
    ops = await client.get("/v1/agencies/ops", headers=ADMIN)
    assert ops.json() == {
        "code": "ops",
        "name": "Hub operators",
        "kind": "other",
        "status": "active",
    }
    duplicate = await client.post(
        "/v1/agencies", json={"code": PROVIDER, "name": "again", "kind": "police"}, headers=ADMIN
    )
    assert duplicate.status_code == 409
    for body, field in (
        ({"code": "Bad Code", "name": "x", "kind": "police"}, "code"),
        ({"code": "okay", "name": "x", "kind": "wizards"}, "kind"),
        ({"code": "okay", "name": "x", "kind": "police", "extra": 1}, "extra"),
    ):
        answer = await client.post("/v1/agencies", json=body, headers=ADMIN)
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == field
    member = as_agency(PROVIDER)
    assert (await client.get("/v1/agencies", headers=member)).status_code == 403
    assert (await client.get(f"/v1/agencies/{PROVIDER}", headers=member)).status_code == 200
    assert (await client.get(f"/v1/agencies/{RECIPIENT}", headers=member)).status_code == 404
    assert (
        await client.post(f"/v1/agencies/{PROVIDER}/suspend", headers=member)
    ).status_code == 403
    assert (await client.post("/v1/agencies/ops/suspend", headers=ADMIN)).status_code == 409
    codes, cursor = [], ""
    while True:
        page = (await client.get(f"/v1/agencies?limit=2&cursor={cursor}", headers=ADMIN)).json()
        codes += [a["code"] for a in page["items"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert codes == ["gmp", "manchester-cc", "ops", "salford-cc"]
    bad = await client.get("/v1/agencies?cursor=%%%", headers=ADMIN)
    assert bad.status_code == 422


async def test_without_a_token_nothing_answers(hub: Hub) -> None:
    for method, path in (
        ("GET", "/v1/agreements"),
        ("GET", "/v1/agencies"),
        ("POST", "/v1/decisions"),
        ("GET", "/internal/retention"),
        ("GET", "/v1/me"),
        ("GET", "/v1/purposes"),
    ):
        answer = await hub.client.request(method, path)
        assert answer.status_code == 401, path
    forged = {"CSP-Internal-Token": "e30.bad"}
    assert (await hub.client.get("/v1/agreements", headers=forged)).status_code == 401


async def test_code_lists(hub: Hub) -> None:
    purposes = (await hub.client.get("/v1/purposes", headers=as_agency(PROVIDER))).json()
    assert {"code", "name", "description", "typical_level"} <= set(purposes[0])
    bases = (await hub.client.get("/v1/legal-bases", headers=as_agency(PROVIDER))).json()
    s115 = next(b for b in bases if b["code"] == "cda-1998-s115")
    assert s115["statute"] == "Crime and Disorder Act 1998" and s115["permits_personal"]
    assert {"art9_condition", "art10_condition", "law_enforcement"} <= set(s115)


async def test_lists_show_each_agency_its_own(hub: Hub) -> None:
    ours = await hub.agreement()
    theirs = await hub.agreement(recipients=[STRANGER])
    third = await hub.agreement(providers=[STRANGER], recipients=[RECIPIENT])

    async def ids(headers: dict[str, str], limit: int = 50) -> list[str]:
        found, cursor = [], ""
        while True:
            page = await hub.client.get(
                f"/v1/agreements?limit={limit}&cursor={cursor}", headers=headers
            )
            found += [a["id"] for a in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if not cursor:
                return found

    assert await ids(ADMIN, limit=1) == [ours["id"], theirs["id"], third["id"]]
    assert await ids(as_agency(PROVIDER)) == [ours["id"], theirs["id"]]
    assert await ids(as_agency(RECIPIENT)) == [ours["id"], third["id"]]


async def test_me(hub: Hub) -> None:
    made = await hub.active(
        providers=[PROVIDER, RECIPIENT],
        recipients=[PROVIDER, RECIPIENT],
        datasets=[{"dataset": "police-crime", "level": "aggregate", "fields": ["category"]}],
    )
    answer = (await hub.client.get("/v1/me", headers=as_agency(RECIPIENT))).json()
    assert answer == {
        "agency": {
            "code": RECIPIENT,
            "name": "MANCHESTER-CC",
            "kind": "local-authority",
            "status": "active",
        },
        "agreements": [
            {
                "id": made["id"],
                "title": made["title"],
                "status": "active",
                "version": 1,
                "role": "both",
                "datasets": [
                    {"dataset": "police-crime", "level": "aggregate", "fields": ["category"]}
                ],
                "review_state": "current",
            }
        ],
    }
    assert made["type"] == "reciprocal"
    unknown = await hub.client.get("/v1/me", headers=as_agency("ghost"))
    assert unknown.status_code == 404


async def test_internal_routes(hub: Hub) -> None:
    await hub.active(retention_days=100)
    await hub.active(retention_days=400, recipients=[STRANGER])
    await hub.agreement(retention_days=900)  # a draft does not count
    revoked = await hub.active(retention_days=800)
    await hub.client.post(f"/v1/agreements/{revoked['id']}/revoke", headers=ADMIN)
    suspended = await hub.active(retention_days=500, providers=[STRANGER])
    await hub.client.post(f"/v1/agreements/{suspended['id']}/suspend", headers=ADMIN)
    retention = await hub.client.get("/internal/retention", headers=SERVICE)
    assert retention.json() == [
        {"provider": PROVIDER, "dataset": "police-crime", "retention_days": 400},
        {"provider": STRANGER, "dataset": "police-crime", "retention_days": 500},
    ]
    agency = await hub.client.get(f"/internal/agencies/{PROVIDER}", headers=SERVICE)
    assert agency.json() == {"code": PROVIDER, "name": "GMP", "kind": "police", "status": "active"}
    assert (await hub.client.get("/internal/agencies/nope", headers=SERVICE)).status_code == 404
    assert (await hub.client.get("/internal/retention", headers=ADMIN)).status_code == 403
    peer = token("ingest", "service")
    assert (await hub.client.get("/internal/retention", headers=peer)).status_code == 200


async def test_decisions_check_purpose_and_fields(hub: Hub) -> None:
    await hub.active(
        datasets=[{"dataset": "police-crime", "level": "depersonalised", "fields": ["category"]}]
    )
    allowed = await hub.decide(RECIPIENT, purpose="strategic-assessment")
    assert allowed["allow"] and allowed["fields"] == ["category"]
    assert (await hub.decide(RECIPIENT, purpose="licensing"))["rule"] == "purpose-not-agreed"
    assert (await hub.decide(RECIPIENT, fields=["postcode"]))["rule"] == "field-not-agreed"
    assert (await hub.decide(RECIPIENT, level="personal"))["rule"] == "level-exceeds-agreement"
    assert (await hub.decide(PROVIDER, action="retract"))["allow"]
    own = await hub.client.post(
        "/v1/decisions",
        json={"agency": PROVIDER, "action": "read", "dataset": "police-crime"},
        headers=as_agency(RECIPIENT),
    )
    assert own.status_code == 422  # the caller's agency comes from the token only


async def test_register_and_usage(hub: Hub) -> None:
    made = await hub.active(dpia_reference="DPIA-2024-07")
    await hub.agreement(title="=HYPERLINK(1)")
    for _ in range(3):
        await hub.decide(RECIPIENT, level="aggregate")
    await hub.decide(RECIPIENT, level="personal")
    explained = await hub.client.post(
        "/v1/decisions",
        json={"action": "read", "dataset": "police-crime", "level": "aggregate"},
        headers=as_agency(RECIPIENT),
    )
    assert explained.json()["allow"]  # logged, but an explanation is not a use
    answer = await hub.client.get("/v1/agreements/register?format=csv", headers=ADMIN)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(answer.text))}
    row = rows[made["id"]]
    assert (row["status"], row["decisions_allowed"], row["decisions_denied"]) == (
        "active",
        "3",
        "1",
    )
    assert row["dpia_reference"] == "DPIA-2024-07" and row["signed"] == "2/2"
    assert any(r["title"] == "'=HYPERLINK(1)" for r in rows.values())
    page = await hub.client.get("/v1/agreements/register", headers=ADMIN | {"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert made["id"] in page.text and "&lt;" not in made["title"]
    stranger = await hub.client.get(
        "/v1/agreements/register?format=json", headers=as_agency(STRANGER)
    )
    assert stranger.status_code == 200 and stranger.json()["items"] == []
    assert (
        await hub.client.get("/v1/agreements/register?format=pdf", headers=ADMIN)
    ).status_code == 422


async def test_dry_run_reports_changed_outcomes(hub: Hub) -> None:
    made = await hub.active(datasets=[{"dataset": "police-crime", "level": "depersonalised"}])
    await hub.decide(RECIPIENT, level="depersonalised")
    await hub.decide(RECIPIENT, level="aggregate")
    await hub.decide(RECIPIENT, level="personal")
    await hub.decide(STRANGER, level="aggregate")
    narrower = agreement_body(days=7)
    answer = await hub.client.post(
        f"/v1/agreements/{made['id']}/dry-run", json=narrower, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["examined"] == 3 and report["changed"] == 1
    assert report["summary"] == {"allow_to_deny": 1, "deny_to_allow": 0, "rule_changed": 0}
    change = report["changes"][0]
    assert change["level"] == "depersonalised"
    assert change["before"]["allow"] and change["after"]["rule"] == "level-exceeds-agreement"
    wider = agreement_body(days=7, datasets=[{"dataset": "police-crime", "level": "personal"}])
    report = (
        await hub.client.post(f"/v1/agreements/{made['id']}/dry-run", json=wider, headers=ADMIN)
    ).json()
    assert report["summary"]["deny_to_allow"] == 1
    invalid = agreement_body(days=7, purpose="nosiness")
    answer = await hub.client.post(
        f"/v1/agreements/{made['id']}/dry-run", json=invalid, headers=ADMIN
    )
    assert answer.status_code == 422
    # Nothing was changed by the dry runs.
    assert (await hub.client.get(f"/v1/agreements/{made['id']}", headers=ADMIN)).json()[
        "latest_version"
    ] == 1


async def test_internal_decisions_deny_odd_requests_instead_of_failing(hub: Hub) -> None:
    await hub.active()
    assert (await hub.decide(RECIPIENT, level="everything"))["rule"] == "level-exceeds-agreement"
    assert (await hub.decide(RECIPIENT, dataset=None))["rule"] == "no-active-agreement"
    assert (await hub.decide("ghost"))["rule"] == "no-active-agreement"
    bad = await hub.client.post(
        "/internal/decisions", json={"agency": RECIPIENT, "action": "steal"}, headers=SERVICE
    )
    assert bad.status_code == 422


async def test_odd_levels_and_purposes_do_not_stop_the_decision_log(hub: Hub) -> None:
    made = await hub.active()
    odd = await hub.decide(RECIPIENT, level="l\x00" + "x" * 29, purpose="p\x00" + "q" * 98)
    assert odd["allow"] is False and odd["agreement"] == made["id"]
    await hub.decide(RECIPIENT, level="aggregate")
    answer = await hub.client.get("/v1/agreements/register?format=csv", headers=ADMIN)
    row = {r["id"]: r for r in csv.DictReader(io.StringIO(answer.text))}[made["id"]]
    assert (row["decisions_allowed"], row["decisions_denied"]) == ("1", "1")


async def test_special_category_datasets_need_an_art9_condition(hub: Hub) -> None:
    special = [d for d in load_catalogue().values() if d.special_category]
    if not special:
        pytest.skip("the catalogue holds no special category dataset")
    dataset = special[0]
    entry = {"dataset": dataset.name, "level": "aggregate"}
    refused = await hub.client.post(
        "/v1/agreements", json=agreement_body(datasets=[entry]), headers=ADMIN
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "datasets[0].dataset"
    lawful = agreement_body(datasets=[entry], legal_basis=["cda-1998-s17a", "uk-gdpr-9-2-g"])
    assert (await hub.client.post("/v1/agreements", json=lawful, headers=ADMIN)).status_code == 201


async def test_openapi_describes_every_route(hub: Hub) -> None:
    schema = (await hub.client.get("/openapi.json")).json()
    for path in (
        "/v1/agreements/register",
        "/v1/agreements/{agreement_id}/revoke",
        "/v1/agreements/{agreement_id}/dry-run",
        "/internal/decisions",
        "/v1/me",
    ):
        assert path in schema["paths"]


async def test_concurrent_signatures_by_one_party_count_once(hub: Hub) -> None:
    made = await hub.agreement()
    path = f"/v1/agreements/{made['id']}/sign"
    answers = await asyncio.gather(
        *[hub.client.post(path, headers=as_agency(PROVIDER)) for _ in range(6)]
    )
    assert {a.status_code for a in answers} == {200}
    final = (await hub.client.get(f"/v1/agreements/{made['id']}", headers=ADMIN)).json()
    assert [s["agency"] for s in final["signatures"]] == [PROVIDER]
    events = (await hub.client.get(f"{path[: -len('/sign')]}/history", headers=ADMIN)).json()
    assert [e["event"] for e in events["items"]].count("signed") == 1
