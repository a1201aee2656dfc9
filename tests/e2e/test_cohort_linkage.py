"""The synthetic PPO / IOM cohort pushed by three providers through the running gateway, linked
inside ingest, with nothing that identifies a person in any answer below level personal."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from scripts.hub import Hub
from scripts.synthetic_cohort import generate
from tests.e2e.conftest import ADMIN_KEY
from tests.e2e.test_end_to_end import bearer, wait_depersonalised

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
    cohort = generate(people=150, cohort=40, seed=21)
    with httpx.Client(base_url=hub.gateway_url, timeout=120) as client:
        keys: dict[str, str] = {}
        for code, kind in AGENCIES.items():
            made = client.post(
                "/v1/agencies", json={"code": code, "name": code, "kind": kind}, headers=admin
            )
            assert made.status_code == 201, made.text
            keys[code] = client.post(f"/v1/agencies/{code}/keys", headers=admin).json()["key"]
        agreement = client.post(
            "/v1/agreements",
            json={
                "title": "IOM cohort: offences, assessments and treatment",
                "purpose": "integrated-offender-management",
                "legal_basis": [
                    "cda-1998-s115",
                    "uk-gdpr-6-1-e",
                    "dpa-2018-part-3",
                    "uk-gdpr-9-2-h",
                ],
                "providers": ["e2e-probation", "e2e-force", "e2e-drugs"],
                "recipients": ["e2e-iom"],
                "datasets": [
                    {"dataset": "offender-cohort", "level": "personal"},
                    {"dataset": "oasys-assessment", "level": "personal"},
                    {"dataset": "offender-offence", "level": "personal"},
                    {"dataset": "drug-treatment", "level": "aggregate"},
                ],
                "start": "2020-01-01",
                "end": "2030-12-31",
                "review_by": "2030-06-30",
                "retention_days": 3650,
            },
            headers=admin,
        )
        assert agreement.status_code == 201, agreement.text
        for code in AGENCIES:
            signed = client.post(
                f"/v1/agreements/{agreement.json()['id']}/sign", headers=bearer(keys[code])
            )
            assert signed.status_code == 200, signed.text

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
