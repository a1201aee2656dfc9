"""Cohort queries on the aggregates route: membership, people counted once, relative to joining,
breakdowns by any granted attribute, the stricter rule, and the person pseudonym kept inside."""

from __future__ import annotations

from typing import Any

from tests.depersonalise.conftest import event, token
from tests.depersonalise.test_api import push


def grant(provider: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {
        "provider": provider,
        "agreement": f"agr-{provider}",
        "version": 1,
        "level": "aggregate",
        "fields": fields,
        "from": "2020-01-01",
        "to": None,
        "purpose": None,
    }


def council(
    dataset: str, providers: list[str], cohort: tuple[str, ...] | None = ("probation",), **kw
):
    claims: dict[str, Any] = dict(
        sub="council",
        action="read",
        dataset=dataset,
        level="aggregate",
        agreement="agr-1",
        grants=[grant(p, kw.get("fields")) for p in providers],
    )
    if cohort is not None:
        claims["cohort_grants"] = [grant(p) for p in cohort]
    return token(**claims)


def person_event(n: int, dataset: str, provider: str, person: str | None, day: str, **record):
    found = event(
        n, f"{dataset}-{n}", None, None, day, dataset=dataset, provider=provider, **record
    )
    found["person"] = person
    found["location_source"] = "none"
    return found


def load_cohort(client, fake) -> None:
    """PPO: p1..p5 joined January 2024 (open), p6 joined April, left May; q1 is in IOM only.
    Police offences in February: p1 three, p2..p5 one each, q1 two, one unlinked; a second
    police force's offences by p1 (not granted to the council)."""
    events = []
    n = 0

    def add(*args, **kwargs):
        nonlocal n
        n += 1
        events.append(person_event(n, *args, **kwargs))

    for i in range(1, 6):
        add(
            "offender-cohort", "probation", f"p{i}", "2024-01-10", category="PPO", risk_level="high"
        )
    add(
        "offender-cohort",
        "probation",
        "p6",
        "2024-04-05",
        category="PPO",
        occurred_to="2024-05-01",
        risk_level="medium",
    )
    add("offender-cohort", "probation", "q1", "2024-01-10", category="IOM")
    for _ in range(3):
        add("offender-offence", "police", "p1", "2024-02-03", category="burglary")
    for i in range(2, 6):
        add("offender-offence", "police", f"p{i}", "2024-02-20", category="robbery")
    for _ in range(2):
        add("offender-offence", "police", "q1", "2024-02-20", category="robbery")
    add("offender-offence", "police", None, "2024-02-21", category="robbery")
    add("offender-offence", "otherforce", "p1", "2024-02-21", category="robbery")
    answer = push(client, fake, events)
    assert answer["depersonalised"] == len(events)


def table(client, dataset: str, headers, **params) -> Any:
    return client.get(f"/v1/datasets/{dataset}/aggregates", params=params, headers=headers)


def counts(answer) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    return {cell["period"]: cell["count"] for cell in answer.json()["cells"]}


def test_cohort_size_per_period_counts_members_at_any_time_in_it(make_client) -> None:
    client, fake = make_client()
    load_cohort(client, fake)
    headers = council("offender-cohort", ["probation"])
    answer = table(
        client,
        "offender-cohort",
        headers,
        cohort="PPO",
        count="people",
        period="quarter",
        **{"from": "2024-01-01", "to": "2024-09-30"},
    )
    assert counts(answer) == {"2024-Q1": 5, "2024-Q2": 6, "2024-Q3": 5}
    body = answer.json()
    assert body["geography"] == "all" and {c["area"] for c in body["cells"]} == {"all"}
    assert (body["cohort"], body["count"], body["providers_left_out"]) == ("PPO", "people", [])


def test_offences_of_members_by_records_people_and_relative_to_joining(make_client) -> None:
    client, fake = make_client()
    load_cohort(client, fake)
    headers = council("offender-offence", ["police"])
    window = {"from": "2024-02-01", "to": "2024-02-29"}
    # 3 burglaries and 4 robberies: no category cell of at least 5 covers the small ones, so the
    # total of 7 is suppressed too (else 7 would be the sum of two suppressed cells).
    records = table(client, "offender-offence", headers, cohort="PPO", **window)
    assert counts(records) == {"2024-02": None}
    assert records.json()["providers_left_out"] == ["otherforce"]
    more = [
        person_event(100 + i, "offender-offence", "police", "p1", "2024-02-04", category="burglary")
        for i in range(3)
    ]
    push(client, fake, more)
    # Now 6 burglaries cover the 4 robberies: the members' 10 offences are published.
    records = table(client, "offender-offence", headers, cohort="PPO", **window)
    assert counts(records) == {"2024-02": 10}
    # People: p1 (burglary) and p2..p5 (robbery), both small, no cover: suppressed.
    people = table(client, "offender-offence", headers, cohort="PPO", count="people", **window)
    assert counts(people) == {"2024-02": None}
    # Without the cohort every record counts, linked or not (q1 and the unlinked one included).
    everyone = table(client, "offender-offence", headers, cohort="PPO", relative="joined")
    relative = counts(everyone)
    assert list(relative) == [str(m) for m in range(-12, 13)]
    assert relative["1"] == 10 and all(relative[k] == 0 for k in relative if k != "1")
    by_group = table(
        client,
        "offender-offence",
        headers,
        cohort="PPO",
        relative="joined",
        by="category",
        threshold=5,
    ).json()
    found = {(c["period"], c["category"]): c["count"] for c in by_group["cells"]}
    # Four robberies are suppressed, and the burglaries with them (their cover).
    assert found[("1", "robbery")] is None and found[("1", "burglary")] is None
    release = client.get(f"/v1/releases/{by_group['release_id']}", headers=headers).json()
    assert release["query"]["cohort"] == "PPO" and release["query"]["relative"] == "joined"


def test_the_stricter_rule_of_the_two_datasets_applies_and_breakdowns_by_attributes(
    make_client,
) -> None:
    client, fake = make_client()
    load_cohort(client, fake)
    events = [
        person_event(
            100 + i,
            "drug-treatment",
            "dhs",
            f"p{i}",
            "2024-02-10",
            category="start",
            substance="opiates",
        )
        for i in range(1, 6)
    ]
    push(client, fake, events)
    headers = council("drug-treatment", ["dhs"])
    answer = table(
        client,
        "drug-treatment",
        headers,
        cohort="PPO",
        count="people",
        by="substance",
        period="quarter",
        **{"from": "2024-01-01", "to": "2024-03-31"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["rule"]["threshold"] == 8 and body["rule"]["round_to"] == 5
    assert [(c["substance"], c["count"]) for c in body["cells"]] == [("opiates", None)]
    cohort_headers = council("offender-cohort", ["probation"])
    by_risk = table(
        client,
        "offender-cohort",
        cohort_headers,
        cohort="PPO",
        count="people",
        by="risk_level",
        period="quarter",
        **{"from": "2024-01-01", "to": "2024-03-31"},
    ).json()
    assert [(c["risk_level"], c["count"]) for c in by_risk["cells"]] == [("high", 5)]
    assert "substance" not in str(
        client.get(
            "/v1/datasets/offender-offence/records", headers=council("offender-offence", ["police"])
        ).json()
    )


def test_bad_cohort_queries_name_the_parameter(make_client) -> None:
    client, fake = make_client()
    load_cohort(client, fake)
    headers = council("offender-offence", ["police"])

    def problem(status: int, dataset: str = "offender-offence", h=headers, **params) -> dict:
        answer = table(client, dataset, h, **params)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        return answer.json()

    assert problem(404, cohort="NOPE")["field"] == "cohort"
    assert "NOPE" in problem(404, cohort="NOPE")["detail"]
    assert (
        problem(
            422, "police-crime", council("police-crime", ["police"]), geography="x", count="people"
        )["field"]
        == "count"
    )
    assert problem(422, cohort="PPO", by="pnc_id")["field"] == "by"
    assert problem(422, cohort="PPO", by="no_such_field")["field"] == "by"
    narrow = council("offender-offence", ["police"], fields=["occurred_at"])
    assert problem(422, h=narrow, cohort="PPO", by="outcome")["field"] == "by"
    assert problem(422, relative="joined")["field"] == "relative"
    assert problem(422, cohort="PPO", relative="joined", period="year")["field"] == "period"
    assert problem(422)["field"] == "geography"
    refused = problem(403, h=council("offender-offence", ["police"], cohort=None), cohort="PPO")
    assert refused["rule"] == "cohort-not-granted"


def test_the_person_pseudonym_is_stored_but_never_published(make_client) -> None:
    client, fake = make_client()
    load_cohort(client, fake)
    headers = token(
        sub="council",
        action="read",
        dataset="offender-offence",
        level="depersonalised",
        grants=[grant("police")],
    )
    answer = client.get("/v1/datasets/offender-offence/records", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["records"]
    assert '"p1"' not in answer.text and "person" not in answer.text
