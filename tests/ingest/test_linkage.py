"""Person linkage inside ingest: exact on strong identifiers, probabilistic (Splink) on names and
dates of birth, re-linking on correction and retraction, the review queue, what leaves ingest."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from scripts.synthetic_cohort import generate
from services.ingest import linkage
from services.ingest.linkage import (
    LINK,
    PersonComponents,
    pair_quality,
    person_pseudonym,
    share_pseudonym,
)
from services.ingest.service_sql import RECORD, record_key
from tests.conftest import RECORD_KEY_SECRET
from tests.ingest.conftest import Client, drain, token

KEY = "linkage-key-for-tests-only-0123456789"


def admin() -> dict[str, str]:
    return token("ops", ["admin"])  # a fresh token: they live 60 s


PROVIDERS = (
    ("offender-cohort", "probation"),
    ("offender-offence", "gmp"),
    ("oasys-assessment", "probation"),
    ("drug-treatment", "cgl"),
)
NAMES = {"surname": "Kowalski", "forenames": "Piotr", "date_of_birth": "1988-04-11"}


@pytest.fixture
async def linked(make_client: Callable[..., Awaitable[Client]]) -> Client:
    from pydantic import SecretStr

    return await make_client(linkage_key=SecretStr(KEY), link_min_training_records=10)


async def push(client: Client, dataset: str, provider: str, rows: list[dict[str, Any]]) -> Any:
    response = await client.post(
        f"/v1/datasets/{dataset}/records",
        json={"records": rows},
        headers=token(provider, action="push", dataset=dataset),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["rejected"] == 0, body["errors"][:3]
    return body


def links(client: Client) -> dict[tuple[str, str], tuple[int, str]]:
    """(dataset, source_ref) → (person id, method)."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    query = select(RECORD.c.dataset, RECORD.c.source_ref, LINK.c.person_id, LINK.c.method).join(
        LINK, LINK.c.record_id == RECORD.c.id
    )
    with engine.connect() as connection:
        return {(d, ref): (person, how) for d, ref, person, how in connection.execute(query)}


def offence(ref: str, pnc: str, **extra: Any) -> dict[str, Any]:
    return {
        "source_ref": ref,
        "occurred_at": "2024-02-01",
        "category": "Burglary",
        "pnc_id": pnc,
        **extra,
    }


def member(ref: str, pnc: str | None, **extra: Any) -> dict[str, Any]:
    row = {"source_ref": ref, "occurred_at": "2024-01-01", "category": "PPO", **extra}
    if pnc is not None:
        row["pnc_id"] = pnc
    return row


async def test_every_written_form_of_one_pnc_id_is_one_person_and_events_carry_a_second_pseudonym(
    linked: Client, receiver: Any
) -> None:
    await push(linked, "offender-cohort", "probation", [member("C-1", "19/123456E", **NAMES)])
    await push(
        linked,
        "offender-offence",
        "gmp",
        [offence("O-1", "2019/0123456E"), offence("O-2", "19123456e"), offence("O-3", "19/42J")],
    )
    found = links(linked)
    person, _ = found[("offender-cohort", "C-1")]
    assert found[("offender-offence", "O-1")] == (person, "exact")
    assert found[("offender-offence", "O-2")] == (person, "exact")
    assert found[("offender-offence", "O-3")][0] != person
    assert found[("offender-offence", "O-3")][1] == "new"
    await drain(linked)
    events = {e["record_key"]: e for e in receiver.state.events}
    # C-1, O-1 and O-2 share one depersonalise-only pseudonym, O-3 has its own
    assert len({e["person"] for e in events.values()}) == 2
    shared = share_pseudonym(KEY, person)
    assert sum(e["person"] == shared for e in events.values()) == 3
    text = json.dumps(receiver.state.events)
    assert person_pseudonym(KEY, person) not in text  # the hub's own pseudonym never leaves
    for secret in ("123456", "Kowalski", "Piotr", "1988-04-11"):
        assert secret not in text


async def test_a_correction_re_links_and_a_retraction_removes_the_link(linked: Client) -> None:
    await push(linked, "offender-cohort", "probation", [member("C-1", "19/123456E")])
    await push(linked, "offender-offence", "gmp", [offence("O-1", "19/123456E")])
    first = links(linked)
    assert first[("offender-offence", "O-1")][0] == first[("offender-cohort", "C-1")][0]
    await push(linked, "offender-offence", "gmp", [offence("O-1", "19/42J")])
    second = links(linked)
    assert second[("offender-offence", "O-1")][0] != second[("offender-cohort", "C-1")][0]
    gone = await linked.delete(
        "/v1/datasets/offender-offence/records/O-1",
        headers=token("gmp", action="retract", dataset="offender-offence"),
    )
    assert gone.status_code == 204
    assert ("offender-offence", "O-1") not in links(linked)


async def test_two_records_with_different_pnc_ids_never_link_on_names(linked: Client) -> None:
    cohort = generate(people=120, cohort=40, seed=3)
    await push(linked, "offender-cohort", "probation", cohort.records["offender-cohort"])
    await push(linked, "oasys-assessment", "probation", cohort.records["oasys-assessment"])
    trained = await linked.post("/v1/linkage/model", headers=admin())
    assert trained.status_code == 200, trained.text
    await push(linked, "offender-cohort", "probation", [member("X-1", "19/123456E", **NAMES)])
    # a names-only record joins X-1's person, and stands for X-1's PNC ID from then on
    episode = {
        "source_ref": "T-1",
        "occurred_at": "2024-03-01",
        "category": "start",
        "substance": "Opiates",
        **NAMES,
    }
    await push(linked, "drug-treatment", "cgl", [episode])
    await push(linked, "offender-cohort", "probation", [member("X-2", "19/42J", **NAMES)])
    await push(linked, "offender-cohort", "probation", [member("X-3", None, **NAMES)])
    found = links(linked)
    assert found[("drug-treatment", "T-1")][0] == found[("offender-cohort", "X-1")][0]
    assert found[("offender-cohort", "X-1")][0] != found[("offender-cohort", "X-2")][0]
    # the same names and date of birth without a PNC ID link probabilistically to one of them
    person, how = found[("offender-cohort", "X-3")]
    assert how == "probabilistic"
    assert person in {found[("offender-cohort", "X-1")][0], found[("offender-cohort", "X-2")][0]}


@pytest.mark.parametrize("chunk", [20_000, 97])
async def test_the_synthetic_cohort_links_with_precision_and_recall_of_at_least_098(
    linked: Client, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkage, "LINK_CHUNK", chunk)  # 97: every batch in many Splink passes
    cohort = generate(people=600, cohort=120, seed=11)
    for dataset, provider in PROVIDERS[:3]:
        await push(linked, dataset, provider, cohort.records[dataset])
    trained = await linked.post("/v1/linkage/model", headers=admin())
    assert trained.status_code == 200, trained.text
    assert trained.json()["labelled_pairs"] > 0
    treatment = cohort.records["drug-treatment"]
    half = len(treatment) // 2
    await push(linked, "drug-treatment", "cgl", treatment[:half])
    await push(linked, "drug-treatment", "cgl", treatment[half:])
    found = links(linked)
    assert len(found) == sum(len(rows) for rows in cohort.records.values())
    assigned = {i: person for i, (person, _) in enumerate(found.values())}
    truth = {i: str(cohort.truth[key]) for i, key in enumerate(found)}
    quality = pair_quality(assigned, truth)
    print("linkage quality", quality)
    assert quality["precision"] >= 0.98 and quality["recall"] >= 0.98, quality
    methods = {how for _, how in found.values()}
    assert {"exact", "probabilistic", "new"} <= methods
    report = (await linked.get("/v1/linkage/quality", headers=admin())).json()
    assert report["datasets"]["drug-treatment"]["by_method"]["probabilistic"] > 0
    assert sum(band["links"] for band in report["match_weights"]) > 0
    assert "against_truth" not in report
    providers = {d: p for d, p in PROVIDERS}
    labels = [
        {"provider": providers[d], "dataset": d, "source_ref": ref, "person": str(person)}
        for (d, ref), person in cohort.truth.items()
    ]
    labelled = await linked.post("/v1/linkage/quality", json={"labels": labels}, headers=admin())
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["against_truth"] == {**quality, "records": len(found)}


async def test_uncertain_pairs_are_queued_and_reviewed(
    make_client: Callable[..., Awaitable[Client]], receiver: Any
) -> None:
    from pydantic import SecretStr

    # everything scored is uncertain: nothing links on names, every candidate pair is queued
    client = await make_client(
        linkage_key=SecretStr(KEY),
        link_min_training_records=10,
        link_accept_weight=1000.0,
        link_review_weight=-1000.0,
    )
    cohort = generate(people=120, cohort=40, seed=5)
    await push(client, "offender-cohort", "probation", cohort.records["offender-cohort"])
    await push(client, "oasys-assessment", "probation", cohort.records["oasys-assessment"])
    assert (await client.post("/v1/linkage/model", headers=admin())).status_code == 200
    await push(client, "offender-cohort", "probation", [member("X-1", "19/123456E", **NAMES)])
    await push(
        client,
        "drug-treatment",
        "cgl",
        [
            {
                "source_ref": "T-1",
                "occurred_at": "2024-03-01",
                "category": "start",
                "substance": "Opiates",
                "surname": "KOWALSKY",
                "forenames": "Piotr",
                "date_of_birth": "11/04/1988",
            }
        ],
    )
    before = links(client)
    assert before[("drug-treatment", "T-1")][0] != before[("offender-cohort", "X-1")][0]
    listed = await client.get("/v1/linkage/reviews", headers=admin())
    assert listed.status_code == 200
    pairs = [r for r in listed.json()["reviews"] if r["record"]["dataset"] == "drug-treatment"]
    wanted = [r for r in pairs if r["candidate"]["pnc"] == "19/123456E"]
    assert wanted, listed.json()
    refused = await client.get("/v1/linkage/reviews", headers=token("gmp"))
    assert refused.status_code == 403
    bad = await client.post(
        f"/v1/linkage/reviews/{wanted[0]['review_id']}", json={"decision": "maybe"}, headers=admin()
    )
    assert bad.status_code == 422
    await drain(client)  # the episode reached depersonalise under its own person
    accepted = await client.post(
        f"/v1/linkage/reviews/{wanted[0]['review_id']}",
        json={"decision": "accept"},
        headers=admin(),
    )
    assert accepted.json()["status"] == "accepted"
    after = links(client)
    assert after[("drug-treatment", "T-1")] == (after[("offender-cohort", "X-1")][0], "reviewed")
    # depersonalise hears of the merge: the episode is sent again with the cohort member's person
    await drain(client)
    episode = record_key(RECORD_KEY_SECRET, "cgl", "drug-treatment", "T-1")
    sent = [e for e in receiver.state.events if e["record_key"] == episode]
    assert sent[-1]["person"] == share_pseudonym(KEY, after[("offender-cohort", "X-1")][0])
    assert sent[-1]["revision"] > sent[0]["revision"]
    again = await client.post(
        f"/v1/linkage/reviews/{wanted[0]['review_id']}",
        json={"decision": "reject"},
        headers=admin(),
    )
    assert again.status_code == 404


async def test_without_a_linkage_key_records_are_stored_unlinked(
    client: Client, receiver: Any
) -> None:
    await push(client, "offender-cohort", "probation", [member("C-1", "19/123456E")])
    assert links(client) == {}
    await drain(client)
    assert receiver.state.events[-1]["person"] is None
    off = await client.get("/v1/linkage/reviews", headers=admin())
    assert off.status_code == 409 and off.json()["type"].endswith("linkage-off")


async def test_a_retraction_re_links_what_was_linked_through_the_record(
    linked: Client, receiver: Any
) -> None:
    cohort = generate(people=120, cohort=40, seed=7)
    await push(linked, "offender-cohort", "probation", cohort.records["offender-cohort"])
    await push(linked, "oasys-assessment", "probation", cohort.records["oasys-assessment"])
    assert (await linked.post("/v1/linkage/model", headers=admin())).status_code == 200
    await push(linked, "offender-cohort", "probation", [member("X-1", "19/123456E", **NAMES)])
    episode = {
        "source_ref": "T-1",
        "occurred_at": "2024-03-01",
        "category": "start",
        "substance": "Opiates",
        **NAMES,
    }
    await push(linked, "drug-treatment", "cgl", [episode])
    found = links(linked)
    assert found[("drug-treatment", "T-1")] == (
        found[("offender-cohort", "X-1")][0],
        "probabilistic",
    )
    await drain(linked)
    gone = await linked.delete(
        "/v1/datasets/offender-cohort/records/X-1",
        headers=token("probation", action="retract", dataset="offender-cohort"),
    )
    assert gone.status_code == 204
    after = links(linked)
    assert ("offender-cohort", "X-1") not in after
    person, how = after[("drug-treatment", "T-1")]
    assert how == "new" and person != found[("offender-cohort", "X-1")][0]
    await drain(linked)
    key = record_key(RECORD_KEY_SECRET, "cgl", "drug-treatment", "T-1")
    assert receiver.state.current[key]["person"] == share_pseudonym(KEY, person)


@given(
    st.lists(st.sampled_from(["19/1A", "19/2B", None]), min_size=2, max_size=12),
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=40),
)
def test_components_never_join_different_strong_identifiers(
    pncs: list[str | None], edges: list[tuple[int, int]]
) -> None:
    components = PersonComponents()
    for index, pnc in enumerate(pncs):
        components.add(f"n{index}", None, {"pnc": pnc} if pnc else {})
    for a, b in edges:
        if a < len(pncs) and b < len(pncs):
            components.union(f"n{a}", f"n{b}")
    groups: dict[str, set[str]] = {}
    for index, pnc in enumerate(pncs):
        if pnc:
            groups.setdefault(components.find(f"n{index}"), set()).add(pnc)
    assert all(len(values) == 1 for values in groups.values())
