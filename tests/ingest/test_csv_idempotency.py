from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.bodies import csv_lines, neutralise
from services.ingest.deps import app_state
from tests.ingest.conftest import Client, crime, token

PUSH = "/v1/datasets/police-crime/records"


async def push_csv(client: Client, text: bytes, **headers: str) -> Any:
    return await client.post(
        PUSH, content=text, headers={**token("gmp"), "Content-Type": "text/csv", **headers}
    )


async def test_csv_with_bom_semicolons_and_quotes(client: Client) -> None:
    text = (
        "\ufeffsource_ref;occurred_at;category;easting;northing;location_description\r\n"
        'r1;2024-02-01;"Burglary; dwelling";383000;398000;"said ""hello"", left"\r\n'
        "r2;2024-02-01;Burglary;383000\r\n"
        "\r\n"
        "r3;2024-02-30;Burglary;383000;398000;\r\n"
    ).encode()
    body = (await push_csv(client, text)).json()
    assert (body["received"], body["accepted"], body["rejected"]) == (3, 1, 2)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(2, None), (3, "occurred_at")]


async def test_more_than_a_thousand_errors_are_counted(client: Client) -> None:
    lines = ["source_ref,occurred_at,category,easting,northing"]
    lines += [f"r{i},not-a-date,Burglary,383000,398000" for i in range(1200)]
    body = (await push_csv(client, "\n".join(lines).encode())).json()
    assert len(body["errors"]) == 1000 and body["errors_total"] == 1200
    assert body["rejected"] == 1200


async def test_same_key_same_body_gives_first_answer(client: Client) -> None:
    payload = {"records": [crime("k1"), crime("k2", category="")]}
    headers = {**token("gmp"), "Idempotency-Key": "batch-1"}
    first = await client.post(PUSH, json=payload, headers=headers)
    for _ in range(2):
        again = await client.post(PUSH, json=payload, headers=headers)
        assert again.status_code == 202 and again.json() == first.json()
    other = await client.post(PUSH, json={"records": [crime("k3")]}, headers=headers)
    assert other.status_code == 422
    # keys are scoped to the agency
    elsewhere = await client.post(
        PUSH, json=payload, headers={**token("nottspolice"), "Idempotency-Key": "batch-1"}
    )
    assert elsewhere.json()["batch_id"] != first.json()["batch_id"]
    quality = await client.get("/v1/datasets/police-crime/quality", headers=token("gmp"))
    assert sum(p["records"] for p in quality.json()["periods"]) == 1


async def test_retry_while_first_runs_is_409(client: Client) -> None:
    running = app_state(client.app).in_flight.running
    running.add(("gmp", "slow"))
    response = await client.post(
        PUSH, json={"records": [crime("s1")]}, headers={**token("gmp"), "Idempotency-Key": "slow"}
    )
    assert response.status_code == 409
    running.clear()
    concurrent = await asyncio.gather(
        *(
            client.post(
                PUSH,
                json={"records": [crime(f"p{i}") for i in range(3000)]},
                headers={**token("gmp"), "Idempotency-Key": "parallel"},
            )
            for _ in range(2)
        )
    )
    statuses = sorted(r.status_code for r in concurrent)
    assert statuses in ([202, 202], [202, 409])


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    bodies=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6),
    key=st.text(alphabet="abcdefghijklmnop0123456789-", min_size=1, max_size=20),
)
def test_idempotency_property(bodies: list[str], key: str, make_client_sync: Any) -> None:
    """For any sequence of pushes under one key: the first body's answer repeats; others are 422."""
    responses = make_client_sync(bodies, key)
    first = responses[0]
    for body, response in zip(bodies, responses, strict=True):
        if body == bodies[0]:
            assert response == first
        else:
            assert response == 422


def test_formula_cells_are_neutralised() -> None:
    assert neutralise("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert neutralise("\tx") == "'\tx" and neutralise("@a") == "'@a" and neutralise("ok") == "ok"
    text = "".join(csv_lines(["a", "b"], [["+1", -3.5], [None, "-x"]]))
    assert text == "a,b\r\n'+1,-3.5\r\n,'-x\r\n"
