"""The synthetic PPO / IOM cohort pushed by three providers through the running gateway, linked
inside ingest, with nothing that identifies a person in any answer below level personal."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from datetime import date
from typing import Any

import httpx
import pytest

from scripts.hub import Hub
from scripts.synthetic_cohort import NEEDS, SyntheticCohort, generate, written_pnc
from tests.e2e.conftest import (
    ADMIN_KEY,
    agree,
    agreement_terms,
    bearer,
    register_agencies,
    wait_depersonalised,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AGENCIES = {
    "e2e-probation": "probation",
    "e2e-force": "police",
    "e2e-drugs": "drug-alcohol",
    "e2e-iom": "local-authority",
}
PROVIDER = {
    "offender-cohort": "e2e-probation",
    "oasys-assessment": "e2e-probation",
    "offender-offence": "e2e-force",
    "drug-treatment": "e2e-drugs",
}


def test_three_providers_cohort_is_linked_and_never_identified_below_personal(hub: Hub) -> None:
    admin = bearer(ADMIN_KEY)
    # A cohort large enough that the re-offending measure survives the release lattice (its base
    # cells are calendar year x months since joining: a few dozen members publish none of them).
    cohort = generate(people=700, cohort=300, seed=21)
    with httpx.Client(base_url=hub.gateway_url, timeout=120) as client:
        keys = register_agencies(client, AGENCIES.items())
        terms = agreement_terms(
            "IOM cohort: offences, assessments and treatment",
            "integrated-offender-management",
            ["e2e-probation", "e2e-force", "e2e-drugs"],
            ["e2e-iom"],
            [
                {"dataset": "offender-cohort", "level": "personal"},
                {"dataset": "oasys-assessment", "level": "personal"},
                {"dataset": "offender-offence", "level": "personal"},
                {"dataset": "drug-treatment", "level": "aggregate"},
            ],
            legal_basis=("cda-1998-s115", "uk-gdpr-6-1-e", "dpa-2018-part-3", "uk-gdpr-9-2-h"),
            start="2020-01-01",
        )
        agree(client, terms, [keys[code] for code in AGENCIES])

        def push(dataset: str) -> None:
            provider = keys[PROVIDER[dataset]]
            rows = cohort.records[dataset]
            answer = client.post(
                f"/v1/datasets/{dataset}/records", json={"records": rows}, headers=bearer(provider)
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["rejected"] == 0, answer.json()["errors"][:3]
            wait_depersonalised(client, answer.json()["batch_id"], provider, len(rows))

        for dataset in ("offender-cohort", "oasys-assessment", "offender-offence"):
            push(dataset)
        trained = client.post("/v1/linkage/model", headers=admin)
        assert trained.status_code == 200, trained.text
        assert client.post("/v1/linkage/model", headers=bearer(keys["e2e-iom"])).status_code == 403
        push("drug-treatment")

        labels = [
            {"provider": PROVIDER[d], "dataset": d, "source_ref": ref, "person": str(person)}
            for (d, ref), person in cohort.truth.items()
        ]
        report = client.post("/v1/linkage/quality", json={"labels": labels}, headers=admin)
        assert report.status_code == 200, report.text
        quality = report.json()["against_truth"]
        assert quality["records"] == len(labels)
        assert quality["precision"] >= 0.98 and quality["recall"] >= 0.98, quality
        assert report.json()["datasets"]["drug-treatment"]["by_method"].get("probabilistic", 0) > 0

        # below level personal: no identifier, name, date of birth or pseudonym anywhere
        iom = bearer(keys["e2e-iom"])
        answers: list[Any] = []
        for dataset in ("offender-offence", "oasys-assessment"):
            read = client.get(f"/v1/datasets/{dataset}/records", params={"limit": 500}, headers=iom)
            assert read.status_code == 200, read.text
            answers.append(read.json())
        assert all(answer["records"] for answer in answers)
        text = json.dumps(answers)
        assert '"person"' not in text and "pnc_id" not in text and "surname" not in text
        for person in cohort.people[:50]:
            assert person.surname not in text and person.born.isoformat() not in text
        personal = client.get(
            "/v1/datasets/offender-offence/records",
            params={"level": "personal", "limit": 5},
            headers=iom,
        )
        assert personal.status_code == 200, personal.text
        assert all("/" in row["pnc_id"] for row in personal.json()["records"])

        profile(client, iom, cohort)
        case_view(client, keys, cohort)


QUARTERS = [
    (date(y, m, 1), date(y, m + 2, 31 if m in (1, 10) else 30))
    for y in (2023, 2024)
    for m in (1, 4, 7, 10)
]


def _months(day: date) -> int:
    return day.year * 12 + day.month - 1


def truth_of(cohort: SyntheticCohort) -> dict[str, Any]:
    """The PPO profile from the generator's truth: size per quarter, offences relative to joining
    by month, and members with each need (level 2) and with treatment by substance, per quarter."""
    spans: dict[int, tuple[date, date | None]] = {}
    for row in cohort.records["offender-cohort"]:
        person = cohort.truth[("offender-cohort", row["source_ref"])]
        if row["category"] == "PPO":
            left = row["occurred_to"]
            spans[person] = (
                date.fromisoformat(row["occurred_at"]),
                date.fromisoformat(left) if left else None,
            )

    def member(person: int, first: date, last: date) -> bool:
        span = spans.get(person)
        return span is not None and span[0] <= last and (span[1] is None or span[1] >= first)

    size = {
        f"{q.year}-Q{(q.month - 1) // 3 + 1}": sum(member(p, q, e) for p in spans)
        for q, e in QUARTERS
    }
    relative: Counter[str] = Counter()
    for row in cohort.records["offender-offence"]:
        person = cohort.truth[("offender-offence", row["source_ref"])]
        if person in spans:
            offset = _months(date.fromisoformat(row["occurred_at"])) - _months(spans[person][0])
            if -12 <= offset <= 12:
                relative[str(offset)] += 1
    substance: dict[tuple[str, str], set[int]] = defaultdict(set)
    for row in cohort.records["drug-treatment"]:
        person = cohort.truth[("drug-treatment", row["source_ref"])]
        day = date.fromisoformat(row["occurred_at"])
        for q, e in QUARTERS:
            if q <= day <= e and member(person, q, e):
                label = f"{q.year}-Q{(q.month - 1) // 3 + 1}"
                substance[(label, row["substance"])].add(person)
    needs: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for row in cohort.records["oasys-assessment"]:
        person = cohort.truth[("oasys-assessment", row["source_ref"])]
        day = date.fromisoformat(row["occurred_at"])
        # A member in the assessment's own base period (the dataset's quarter), as the release
        # lattice counts it, so that a year is the sum of its quarters.
        quarter = (
            next((q, e) for q, e in QUARTERS if q <= day <= e) if day.year in (2023, 2024) else None
        )
        if quarter is not None and member(person, *quarter):
            for need in NEEDS:
                needs[(str(day.year), need, str(row[need]))].add(person)
    return {
        "needs": {key: len(people) for key, people in needs.items()},
        "size": size,
        "relative": relative,
        "substance": {key: len(people) for key, people in substance.items()},
    }


def profile(client: httpx.Client, iom: dict[str, str], cohort: SyntheticCohort) -> None:
    """The council's profile of the PPO cohort, checked against the truth where published."""
    truth = truth_of(cohort)
    years = {"from": "2023-01-01", "to": "2024-12-31"}

    def table(dataset: str, **params: Any) -> dict[str, Any]:
        answer = client.get(f"/v1/datasets/{dataset}/aggregates", params=params, headers=iom)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["geography"] == "all" and body["providers_left_out"] == []
        text = json.dumps(body)
        for person in cohort.people[:50]:
            assert person.surname not in text
        return body

    size = table("offender-cohort", cohort="PPO", count="people", period="quarter", **years)
    published = {c["period"]: c["count"] for c in size["cells"] if c["count"] is not None}
    assert published and all(published[q] == truth["size"][q] for q in published)

    offences = table("offender-offence", cohort="PPO", relative="joined", period="month")
    cells = {c["period"]: c["count"] for c in offences["cells"]}
    assert list(cells) == [str(m) for m in range(-12, 13)]
    assert sum(1 for v in cells.values() if v is not None) >= 10
    assert all(v == truth["relative"][k] for k, v in cells.items() if v is not None)

    treated = table(
        "drug-treatment", cohort="PPO", count="people", by="substance", period="quarter", **years
    )
    assert treated["rule"]["threshold"] == 8 and treated["rule"]["round_to"] == 5
    for cell in treated["cells"]:
        if cell["count"] is not None:
            # rounded to 5, from probabilistic links (precision and recall >= 0.98)
            exact = truth["substance"].get((cell["period"], cell["substance"]), 0)
            assert abs(cell["count"] - exact) <= 3, (cell, exact)

    shown = 0
    for need in NEEDS:
        needs = table(
            "oasys-assessment", cohort="PPO", count="people", by=need, period="year", **years
        )
        assert {c[need] for c in needs["cells"]} <= {"0", "1", "2"}
        for cell in needs["cells"]:
            if cell["count"] is not None:
                shown += 1
                assert cell["count"] == truth["needs"].get((cell["period"], need, cell[need]), 0)
    assert shown > 0

    missing = client.get(
        "/v1/datasets/offender-offence/aggregates", params={"cohort": "NOPE"}, headers=iom
    )
    assert missing.status_code == 404 and missing.json()["field"] == "cohort"


def case_view(client: httpx.Client, keys: dict[str, str], cohort: SyntheticCohort) -> None:
    """A case manager of the recipient lists the PPO members, finds one by a PNC ID it holds and
    reads the person's linked records; every access is in the providers' audit views."""
    iom = bearer(keys["e2e-iom"])
    reason = {"CSP-Reason": "IOM case review"}
    missing = client.get("/v1/cohorts/PPO/members", headers=iom)
    assert missing.status_code == 422 and missing.json()["field"] == "CSP-Reason"
    listed = client.get("/v1/cohorts/PPO/members", headers={**iom, **reason})
    assert listed.status_code == 200, listed.text
    members = listed.json()["members"]
    ppo = [i for i, strand in cohort.strand.items() if strand == "PPO"]
    assert len({m["person"] for m in members}) == len(ppo)
    assert client.get("/v1/cohorts/NOPE/members", headers={**iom, **reason}).status_code == 404

    person = cohort.people[ppo[0]]
    assert person.pnc is not None
    found = client.get(
        "/v1/people",
        params={"pnc_id": written_pnc(random.Random(5), *person.pnc)},
        headers={**iom, **reason},
    )
    assert found.status_code == 200, found.text
    [handle] = [p["person"] for p in found.json()["people"]]
    assert handle in {m["person"] for m in members}
    read = client.get(f"/v1/people/{handle}", headers={**iom, **reason})
    assert read.status_code == 200, read.text
    records = read.json()["records"]
    mine = Counter(d for (d, _), p in cohort.truth.items() if p == person.index)
    assert {d: len(rows) for d, rows in records.items()} == {
        d: n
        for d, n in mine.items()
        if d != "drug-treatment"  # aggregate only: never here
    }
    assert records["offender-cohort"][0]["surname"] == person.surname
    assert client.get("/v1/people/p-unknown", headers={**iom, **reason}).status_code == 404

    # The police see the case-view read of their offences, with its grounds.
    audit = client.get("/v1/audit", params={"limit": 1000}, headers=bearer(keys["e2e-force"]))
    assert audit.status_code == 200, audit.text
    seen = [e for e in audit.json()["entries"] if e["route"] == "/v1/people/{person}"]
    assert seen and all(e["reason"] == "IOM case review" for e in seen)
    assert all(e["agency"] == "e2e-iom" for e in seen)
