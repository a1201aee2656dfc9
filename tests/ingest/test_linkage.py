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
from services.ingest.identity import record_key
from services.ingest.linkage_keys import person_handle, person_pseudonym, share_pseudonym
from services.ingest.linkage_matching import PersonComponents
from services.ingest.linkage_review import pair_quality
from services.ingest.tables import LINK, PERSON, RECORD
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    # linked again without X-1: T-1 stands alone, keeping the person's id (its only record now)
    person, how = after[("drug-treatment", "T-1")]
    assert how == "new" and person == found[("offender-cohort", "X-1")][0]
    assert [key for key, (p, _) in after.items() if p == person] == [("drug-treatment", "T-1")]
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


# --- re-evaluation on correction, retraction and purge; conflicting strong identifiers ---------


async def trained(client: Client, seed: int) -> None:
    cohort = generate(people=120, cohort=40, seed=seed)
    await push(client, "offender-cohort", "probation", cohort.records["offender-cohort"])
    await push(client, "oasys-assessment", "probation", cohort.records["oasys-assessment"])
    answer = await client.post("/v1/linkage/model", headers=admin())
    assert answer.status_code == 200, answer.text


def treatment(ref: str, **extra: Any) -> dict[str, Any]:
    return {
        "source_ref": ref,
        "occurred_at": "2024-03-01",
        "category": "start",
        "substance": "Opiates",
        **extra,
    }


def people_rows(client: Client) -> set[int]:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return set(connection.execute(select(PERSON.c.id)).scalars())


async def one_person_three_ways(client: Client) -> tuple[int, dict[str, Any]]:
    """X-1 (PNC ID and names), O-1 (the PNC ID alone), T-1 (the names alone): one person."""
    await trained(client, seed=7)
    await push(client, "offender-cohort", "probation", [member("X-1", "19/123456E", **NAMES)])
    await push(client, "offender-offence", "gmp", [offence("O-1", "19/123456E")])
    await push(client, "drug-treatment", "cgl", [treatment("T-1", **NAMES)])
    found = links(client)
    person = found[("offender-cohort", "X-1")][0]
    assert found[("offender-offence", "O-1")] == (person, "exact")
    assert found[("drug-treatment", "T-1")] == (person, "probabilistic")
    return person, found


def sent_person(receiver: Any, provider: str, dataset: str, ref: str) -> Any:
    return receiver.state.current[record_key(RECORD_KEY_SECRET, provider, dataset, ref)]["person"]


@pytest.mark.slow
async def test_a_retraction_removes_the_persons_link_everywhere_and_re_links_the_survivors(
    linked: Client, receiver: Any
) -> None:
    person, _ = await one_person_three_ways(linked)
    await drain(linked)
    assert sent_person(receiver, "cgl", "drug-treatment", "T-1") == share_pseudonym(KEY, person)
    gone = await linked.delete(
        "/v1/datasets/offender-cohort/records/X-1",
        headers=token("probation", action="retract", dataset="offender-cohort"),
    )
    assert gone.status_code == 204
    after = links(linked)
    # only X-1 joined the PNC ID to the names: the offence keeps the person, the episode splits
    assert after[("offender-offence", "O-1")][0] == person
    split, how = after[("drug-treatment", "T-1")]
    assert split != person and how == "new"
    await drain(linked)
    assert sent_person(receiver, "cgl", "drug-treatment", "T-1") == share_pseudonym(KEY, split)
    assert sent_person(receiver, "gmp", "offender-offence", "O-1") == share_pseudonym(KEY, person)
    # the last records go: no link, no person, no review names them
    for provider, dataset, ref in (
        ("gmp", "offender-offence", "O-1"),
        ("cgl", "drug-treatment", "T-1"),
    ):
        answer = await linked.delete(
            f"/v1/datasets/{dataset}/records/{ref}",
            headers=token(provider, action="retract", dataset=dataset),
        )
        assert answer.status_code == 204
    assert not {p for p, _ in links(linked).values()} & {person, split}
    assert not people_rows(linked) & {person, split}


@pytest.mark.slow
async def test_a_purge_re_links_the_survivors_as_a_retraction_does(
    linked: Client, receiver: Any
) -> None:
    from datetime import timedelta

    from services.ingest.instants import utc_now
    from services.ingest.retention import purge

    person, _ = await one_person_three_ways(linked)
    app = linked.app  # type: ignore[attr-defined]
    entries = purge(
        app.state.engine,
        RECORD_KEY_SECRET,
        [{"provider": "gmp", "dataset": "offender-offence", "retention_days": 0}],
        now=utc_now() + timedelta(seconds=2),
        linkage=(app.state.ingest.catalogue, app.state.ingest.linkage),
    )
    assert entries[0]["deleted"] == 1
    after = links(linked)
    assert ("offender-offence", "O-1") not in after
    assert after[("offender-cohort", "X-1")][0] == person  # X-1 and T-1 still one person
    assert after[("drug-treatment", "T-1")] == (person, "probabilistic")
    # the erasure route too: X-1 erased, T-1 linked again on its own
    erased = await linked.post(
        "/v1/erasures",
        json={"provider": "probation", "dataset": "offender-cohort", "source_refs": ["X-1"]},
        headers=admin(),
    )
    assert erased.status_code == 200, erased.text
    assert links(linked)[("drug-treatment", "T-1")] == (person, "new")
    await drain(linked)
    assert sent_person(receiver, "cgl", "drug-treatment", "T-1") == share_pseudonym(KEY, person)


@pytest.mark.slow
async def test_a_correction_of_names_re_links_what_was_linked_through_them(
    linked: Client, receiver: Any
) -> None:
    person, _ = await one_person_three_ways(linked)
    await drain(linked)
    other = {"surname": "Achterberg", "forenames": "Wilhelmina", "date_of_birth": "1971-12-30"}
    await push(linked, "offender-cohort", "probation", [member("X-1", "19/123456E", **other)])
    after = links(linked)
    assert after[("offender-cohort", "X-1")][0] == person
    assert after[("offender-offence", "O-1")][0] == person
    split, how = after[("drug-treatment", "T-1")]
    assert split != person and how == "new"
    await drain(linked)
    assert sent_person(receiver, "cgl", "drug-treatment", "T-1") == share_pseudonym(KEY, split)
    # a correction that changes no person field leaves every link as it was
    await push(linked, "offender-offence", "gmp", [offence("O-1", "19/123456E", outcome="Charged")])
    assert links(linked) == after


async def pending(client: Client) -> list[dict[str, Any]]:
    listed = await client.get("/v1/linkage/reviews", headers=admin())
    assert listed.status_code == 200
    reviews: list[dict[str, Any]] = listed.json()["reviews"]
    return reviews


async def test_conflicting_strong_identifiers_keep_people_apart_and_queue_a_review(
    linked: Client,
) -> None:
    # same PNC ID, another CRO number: kept apart, with a conflict review
    await push(
        linked,
        "offender-cohort",
        "probation",
        [member("C-1", "19/123456E", cro_number="123456/19E")],
    )
    await push(
        linked, "offender-offence", "gmp", [offence("O-1", "19/123456E", cro_number="654321/19P")]
    )
    found = links(linked)
    assert found[("offender-offence", "O-1")][0] != found[("offender-cohort", "C-1")][0]
    assert found[("offender-offence", "O-1")][1] == "conflict"
    reviews = await pending(linked)
    assert len(reviews) == 1
    review = reviews[0]
    assert review["reason"] == "conflict" and review["match_weight"] is None
    assert (review["record"]["dataset"], review["candidate"]["dataset"]) == (
        "offender-offence",
        "offender-cohort",
    )
    # a record whose PNC ID is one person's and CRO number another's joins neither
    await push(linked, "offender-cohort", "probation", [member("C-2", "19/42J")])
    await push(
        linked, "offender-offence", "gmp", [offence("O-2", "18/1Z", cro_number="111111/18C")]
    )
    await push(
        linked,
        "oasys-assessment",
        "probation",
        [
            {
                "source_ref": "A-1",
                "occurred_at": "2024-03-01",
                "category": "initial",
                "pnc_id": "19/42J",
                "cro_number": "111111/18C",
            }
        ],
    )
    found = links(linked)
    apart = found[("oasys-assessment", "A-1")][0]
    assert apart not in {
        found[("offender-cohort", "C-2")][0],
        found[("offender-offence", "O-2")][0],
    }
    assert found[("offender-cohort", "C-2")][0] != found[("offender-offence", "O-2")][0]
    about = [r for r in await pending(linked) if r["record"]["dataset"] == "oasys-assessment"]
    assert sorted(r["candidate"]["dataset"] for r in about) == [
        "offender-cohort",
        "offender-offence",
    ]
    assert {r["reason"] for r in about} == {"conflict"}
    quality = (await linked.get("/v1/linkage/quality", headers=admin())).json()
    assert quality["pending_conflicts"] == 3
    # an operator who knows them to be one person merges them; the person then holds both CROs
    merged = await linked.post(
        f"/v1/linkage/reviews/{review['review_id']}", json={"decision": "accept"}, headers=admin()
    )
    assert merged.json()["status"] == "accepted"
    await push(
        linked, "offender-offence", "gmp", [offence("O-3", "19/123456E", cro_number="654321/19P")]
    )
    found = links(linked)
    assert found[("offender-offence", "O-3")] == (found[("offender-cohort", "C-1")][0], "exact")
    # a rejected pair is not queued again when its records are linked again
    rejected = await linked.post(
        f"/v1/linkage/reviews/{about[0]['review_id']}", json={"decision": "reject"}, headers=admin()
    )
    assert rejected.json()["status"] == "rejected"
    await push(
        linked,
        "oasys-assessment",
        "probation",
        [
            {
                "source_ref": "A-1",
                "occurred_at": "2024-03-02",
                "category": "initial",
                "pnc_id": "19/42J",
                "cro_number": "111111/18C",
            }
        ],
    )
    again = [r for r in await pending(linked) if r["record"]["dataset"] == "oasys-assessment"]
    # the pending pair is queued again (a new item); the rejected one is not
    assert [r["candidate"]["dataset"] for r in again] == [about[1]["candidate"]["dataset"]]


@pytest.mark.slow
async def test_names_never_join_a_record_to_a_person_holding_another_nhs_number(
    linked: Client,
) -> None:
    person, _ = await one_person_three_ways(linked)
    await push(
        linked, "drug-treatment", "cgl", [treatment("T-2", nhs_number="9434765919", **NAMES)]
    )
    assert links(linked)[("drug-treatment", "T-2")][0] == person  # no NHS number held yet
    await push(
        linked, "drug-treatment", "cgl", [treatment("T-3", nhs_number="4010232137", **NAMES)]
    )
    found = links(linked)
    assert found[("drug-treatment", "T-3")][0] != person
    conflict = [r for r in await pending(linked) if r["reason"] == "conflict"]
    assert {r["record"]["nhs"] for r in conflict} == {"4010232137"}
    assert {r["candidate"]["nhs"] for r in conflict} <= {"9434765919", None}


async def test_a_rotated_linkage_key_re_sends_every_linked_record_under_the_new_pseudonyms(
    make_client: Callable[..., Awaitable[Client]], receiver: Any
) -> None:
    from pydantic import SecretStr

    first = await make_client(linkage_key=SecretStr(KEY))
    await push(first, "offender-cohort", "probation", [member("C-1", "19/123456E", **NAMES)])
    await push(first, "offender-offence", "gmp", [offence("O-1", "19/123456E")])
    await drain(first)
    person = links(first)[("offender-cohort", "C-1")][0]
    old = share_pseudonym(KEY, person)
    assert {e["person"] for e in receiver.state.current.values()} == {old}
    # the same key again: nothing to re-send
    same = await make_client(linkage_key=SecretStr(KEY))
    assert await drain(same) == 0
    rotated = "a-new-linkage-key-after-rotation-0123"
    after = await make_client(linkage_key=SecretStr(rotated))
    assert await drain(after) == 2
    assert links(after) == links(first)  # the same people, re-keyed
    assert {e["person"] for e in receiver.state.current.values()} == {
        share_pseudonym(rotated, person)
    }
    assert old not in json.dumps(list(receiver.state.current.values()))
    handle = person_handle(rotated, "iom-team", person)
    assert handle != person_handle(KEY, "iom-team", person)  # handles change too
