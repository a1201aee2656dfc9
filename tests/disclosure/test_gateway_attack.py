"""The attacker through the running gateway: two providers, two recipients, one of them with two
purposes of which one covers only the first provider; each recipient's answers attacked alone.

Everything the attacker uses comes over the public API with the recipient's own key: the
aggregates answers and the ``grants`` of ``POST /v1/decisions`` for each purpose. Only the truth
(to check the model and to mark the primary cells) comes from the records the test pushed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import numpy as np
import pytest

from scripts.hub import Hub
from tests.disclosure.attacker import (
    OUTSIDE,
    View,
    attack,
    fetch_answers,
    grants_of,
    layers_of,
    query_set,
    truth_of,
)
from tests.disclosure.conftest import FINE, PARENT, YEAR, fine_layer, parent_layer, place, structure
from tests.e2e.conftest import (
    ADMIN_KEY,
    bearer,
    register_agencies,
    running_hub,
    wait_depersonalised,
)
from tests.e2e.test_grants import agree

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET = "police-crime"
POLICE, FIRE, COUNCIL, HEALTH = "d-police", "d-fire", "d-council", "d-health"
BOTH, NARROW = "strategic-assessment", "problem-profile"  # NARROW: the police's data only
CATEGORIES = ("Burglary", "Robbery")


def drawn_records() -> list[tuple[str, str, int, str]]:
    """Small counts (mean 1) by provider × fine area × month × category, a few outside."""
    rng = np.random.default_rng(16)
    records = []
    for provider in (POLICE, FIRE):
        for area in (f"F{n}" for n in range(1, 7)):
            for month in range(1, 13):
                for category in CATEGORIES:
                    records += [(provider, area, month, category)] * int(rng.poisson(1.0))
        records += [(provider, OUTSIDE, 3, "Burglary")] * 2
    return records


def rows(records: list[tuple[str, str, int, str]], provider: str) -> list[dict[str, Any]]:
    out = []
    for number, (owner, area, month, category) in enumerate(records):
        if owner != provider:
            continue
        x, y = place(area, number)
        out.append(
            {
                "source_ref": f"D-{number:05d}",
                "occurred_at": f"{YEAR}-{month:02d}-{1 + number % 27:02d}T12:00:00Z",
                "category": category,
                "easting": x,
                "northing": y,
            }
        )
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    extra = {"CSP_GATEWAY_RATE_LIMIT": "1000/second;100000/minute"}
    with (
        running_hub(tmp_path_factory.mktemp("hub"), extra) as hub,
        httpx.Client(base_url=hub.gateway_url, timeout=60) as client,
    ):
        yield set_up(hub, client)


def set_up(hub: Hub, client: httpx.Client) -> dict[str, Any]:
    keys = register_agencies(
        client,
        ((POLICE, "police"), (FIRE, "fire"), (COUNCIL, "local-authority"), (HEALTH, "health")),
    )
    for name, layer in ((FINE, fine_layer()), (PARENT, parent_layer())):
        loaded = client.post(
            f"/v1/geographies/{name}",
            params={"code_field": "code", "name_field": "name"},
            json=layer,
            headers=bearer(ADMIN_KEY),
        )
        assert loaded.status_code == 202, loaded.text
    deadline = time.monotonic() + 60
    while layers_of(client, bearer(ADMIN_KEY)) != sorted([FINE, PARENT]):
        assert time.monotonic() < deadline, "the layers were not served in time"
        time.sleep(0.2)
    for provider, recipient, purpose in (
        (POLICE, COUNCIL, BOTH),
        (FIRE, COUNCIL, BOTH),
        (POLICE, COUNCIL, NARROW),
        (POLICE, HEALTH, BOTH),
        (FIRE, HEALTH, BOTH),
    ):
        agree(client, keys, provider, recipient, DATASET, "aggregate", purpose=purpose)
    records = drawn_records()
    for provider in (POLICE, FIRE):
        batch = rows(records, provider)
        pushed = client.post(
            f"/v1/datasets/{DATASET}/records",
            json={"records": batch},
            headers=bearer(keys[provider]),
        )
        assert pushed.status_code == 202 and pushed.json()["accepted"] == len(batch), pushed.text
        wait_depersonalised(client, pushed.json()["batch_id"], keys[provider], len(batch))
    truth = truth_of(
        (provider, area, f"{YEAR}-{month:02d}", {"category": category})
        for provider, area, month, category in records
    )
    return {"client": client, "keys": keys, "truth": truth}


def views(client: httpx.Client, key: str, purposes: list[str | None]) -> list[View]:
    out = []
    for purpose in purposes:
        headers = bearer(key) | ({"CSP-Purpose": purpose} if purpose else {})
        out.append(
            View(purpose or "any", headers, grants_of(client, bearer(key), DATASET, purpose))
        )
    return out


def attacked(answers: list[Any], truth: Any) -> Any:
    """The attack twice: told which suppressed base cells are small (nothing may be
    determined even then), and as published (no small cell bounded below t-1)."""
    told = attack(answers, structure(), truth, use_truth_primaries=True)
    assert told.inconsistent == 0 and told.wrong == 0, told.summary()
    assert told.determined == 0, told.summary() + "\n" + "\n".join(told.examples)
    return attack(answers, structure(), truth, use_truth_primaries=False)


QUERIES = query_set(date(YEAR, 1, 1), date(YEAR, 12, 31), singles=("month",))


def test_the_council_learns_no_suppressed_count_from_its_answers_under_both_purposes(
    world: dict[str, Any],
) -> None:
    client, keys = world["client"], world["keys"]
    seen = views(client, keys[COUNCIL], [None, BOTH, NARROW])
    assert {g["provider"] for g in seen[2].grants} == {POLICE}
    assert {g["provider"] for g in seen[1].grants} == {POLICE, FIRE}
    layers = layers_of(client, bearer(keys[COUNCIL]))
    assert layers == sorted([FINE, PARENT])
    answers = fetch_answers(client, DATASET, seen, layers, QUERIES)
    report = attacked(answers, world["truth"])
    assert report.inconsistent == 0 and report.wrong == 0, report.summary()
    assert report.suppressed > 0
    assert report.determined == 0, report.summary() + "\n" + "\n".join(report.examples)
    assert report.narrowed == 0, report.summary() + "\n" + "\n".join(report.examples)


def test_the_health_board_learns_no_suppressed_count_from_its_answers(
    world: dict[str, Any],
) -> None:
    client, keys = world["client"], world["keys"]
    answers = fetch_answers(
        client, DATASET, views(client, keys[HEALTH], [None]), [FINE, PARENT], QUERIES
    )
    report = attacked(answers, world["truth"])
    assert report.inconsistent == 0 and report.wrong == 0, report.summary()
    assert report.suppressed > 0
    assert report.determined == 0, report.summary() + "\n" + "\n".join(report.examples)
    assert report.narrowed == 0, report.summary() + "\n" + "\n".join(report.examples)
