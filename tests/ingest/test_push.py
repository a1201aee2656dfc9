from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from services.ingest.models import BatchPublic, PushAnswer
from shared.holdings import revision_digest
from tests.ingest.conftest import Client, crime, drain, token

PUSH = "/v1/datasets/police-crime/records"


async def push(
    client: Client,
    records: list[Any],
    sub: str = "gmp",
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    return await client.post(
        PUSH,
        json={"records": records},
        headers={**token(sub, action="push", dataset="police-crime"), **(headers or {})},
        params=params,
    )


async def batch(client: Client, batch_id: str, sub: str = "gmp") -> dict[str, Any]:
    response = await client.get(f"/v1/batches/{batch_id}", headers=token(sub))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_valid_rows_are_kept_and_invalid_rows_named(client: Client) -> None:
    records = [
        crime("a1"),
        crime("a2", occurred_at="2024-13-45"),
        crime("a3", easting=None, northing=None, latitude=53.47, longitude=-2.23),
        {"source_ref": "a4", "occurred_at": "2024-01-01"},
        crime("a5", latitude=0.0, longitude=0.0, easting=None, northing=None),
        crime("a6", easting=-5.0),
        crime("a7", colour="red"),
        "not an object",
    ]
    response = await push(client, records)
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"batch_id", "received", "accepted", "rejected", "errors"}
    assert (body["received"], body["accepted"], body["rejected"]) == (8, 2, 6)
    named = {(e["row"], e["field"]) for e in body["errors"]}
    assert named == {
        (2, "occurred_at"),
        (4, "category"),
        (5, "latitude"),
        (6, "easting"),
        (7, "colour"),
        (8, None),
    }
    status = await batch(client, body["batch_id"])
    assert (status["accepted"], status["delivered"]) == (2, 0)
    other = await client.get(f"/v1/batches/{body['batch_id']}", headers=token("other"))
    assert other.status_code == 404
    admin = await client.get(f"/v1/batches/{body['batch_id']}", headers=token("ops", ["admin"]))
    assert admin.status_code == 200
    assert await drain(client) == 2
    status = await batch(client, body["batch_id"])
    assert status["delivered"] == 2 and status["depersonalised"] == 2
    assert status["status"] == "delivered"


async def test_atomic_keeps_nothing_when_a_row_fails(client: Client, receiver: Any) -> None:
    response = await push(client, [crime("b1"), crime("b2", category="")], atomic="true")
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 2)
    assert (await batch(client, body["batch_id"]))["status"] == "rejected"
    assert await drain(client) == 0
    response = await push(client, [crime("b1"), crime("b2")], atomic="true")
    assert response.json()["accepted"] == 2


async def test_events_carry_hmac_key_and_no_identifier(client: Client, receiver: Any) -> None:
    await push(client, [crime("secret-ref-1", location_description="outside no 4")])
    await drain(client)
    (event,) = receiver.state.events
    assert event["op"] == "upsert" and event["location_source"] == "coordinates"
    assert "secret-ref-1" not in str(event)
    assert len(event["record_key"]) == 64
    assert "source_ref" not in event["record"]
    assert event["record"]["occurred_at"] == "2024-01-05T22:10:00Z"


async def test_correction_and_retraction_reach_depersonalise(client: Client, receiver: Any) -> None:
    first = (await push(client, [crime("c1")])).json()
    await drain(client)
    second = (await push(client, [crime("c1", category="Robbery")])).json()
    assert second["accepted"] == 1
    assert (await batch(client, second["batch_id"]))["corrections"] == 1
    await drain(client)
    upserts = [e for e in receiver.state.events if e["op"] == "upsert"]
    assert [e["record"]["category"] for e in upserts] == ["Burglary", "Robbery"]
    assert upserts[1]["revision"] > upserts[0]["revision"]
    decided = {"action": "retract", "dataset": "police-crime"}
    gone = await client.delete(f"{PUSH}/c1", headers=token("gmp", **decided))
    assert gone.status_code == 204
    assert (await client.delete(f"{PUSH}/c1", headers=token("gmp", **decided))).status_code == 404
    assert (await client.delete(f"{PUSH}/zz", headers=token("other", **decided))).status_code == 404
    await drain(client)
    last = receiver.state.events[-1]
    assert last["op"] == "delete" and last["record_key"] == upserts[0]["record_key"]
    assert last["revision"] > upserts[1]["revision"]
    assert first["batch_id"] != second["batch_id"]


async def test_same_ref_twice_in_one_batch_keeps_the_later(client: Client, receiver: Any) -> None:
    body = (await push(client, [crime("d1"), crime("d1", category="Robbery")])).json()
    assert body["accepted"] == 2
    await drain(client)
    assert [e["record"]["category"] for e in receiver.state.events] == ["Robbery"]


async def test_batch_counts_reach_accepted_once_when_rows_are_replaced_before_delivery(
    client: Client, receiver: Any
) -> None:
    first = (await push(client, [crime(f"f{i}") for i in range(10)] + [crime("f0")])).json()
    corrected = (await push(client, [crime("f1", category="Robbery")])).json()
    assert (
        await client.delete(
            f"{PUSH}/f2", headers=token("gmp", action="retract", dataset="police-crime")
        )
    ).status_code == 204
    await drain(client)
    for answer, accepted in ((first, 11), (corrected, 1)):
        counts = await batch(client, answer["batch_id"])
        assert counts["delivered"] == counts["depersonalised"] == accepted, counts


@pytest.mark.slow
async def test_concurrent_pushes_all_succeed_while_reads_are_answered(
    client: Client, receiver: Any
) -> None:
    # Eight providers at once on one store: every push is accepted (queued on SQLite, never 503),
    # and a batch status read is answered while they run: it comes back before the last push does
    # (an order, not a time, so a loaded machine cannot make it flaky).
    bodies = [[crime(f"p{p}-{i}") for i in range(1500)] for p in range(8)]
    first = (await push(client, bodies[0][:10], sub="agency-0")).json()
    finished: list[str] = []

    async def pushed(p: int, body: list[dict[str, Any]]) -> httpx.Response:
        answer = await push(client, body, sub=f"agency-{p}")
        finished.append(f"push-{p}")
        return answer

    pushes = [asyncio.create_task(pushed(p, body)) for p, body in enumerate(bodies)]
    await asyncio.sleep(0.05)
    read = await client.get(f"/v1/batches/{first['batch_id']}", headers=token("agency-0"))
    finished.append("read")
    answers = await asyncio.gather(*pushes)
    assert [a.status_code for a in answers] == [202] * 8, [a.text[:200] for a in answers]
    assert sum(a.json()["accepted"] for a in answers) == 8 * 1500
    assert read.status_code == 200
    assert finished[-1] != "read", finished
    await drain(client)
    for p, answer in enumerate(answers):
        counts = await batch(client, answer.json()["batch_id"], sub=f"agency-{p}")
        assert counts["delivered"] == counts["depersonalised"] == 1500, counts


async def test_relay_backs_off_while_receiver_down(client: Client, receiver: Any) -> None:
    await push(client, [crime(f"e{i}") for i in range(30)])
    receiver.state.fail = True
    try:
        await drain(client)
    except httpx.HTTPStatusError:
        pass
    else:
        raise AssertionError("a failing receiver must fail the round")
    receiver.state.fail = False
    assert await drain(client) == 30
    assert await drain(client) == 0
    assert len({e["event_id"] for e in receiver.state.events}) == 30


async def test_fields_outside_the_agreement_are_refused(client: Client) -> None:
    response = await client.post(
        PUSH,
        json={"records": [crime("f1", outcome="x")]},
        headers=token(
            "gmp", fields=["source_ref", "occurred_at", "category", "easting", "northing"]
        ),
    )
    assert response.status_code == 422
    assert response.json()["fields"] == ["outcome"]


async def test_bad_bodies_are_clear_4xx(client: Client) -> None:
    headers = token("gmp")
    cases = [
        (b"[1, 2]", "application/json", 422),
        (b"", "application/json", 400),
        (b'{"records": [{"a": 1}', "application/json", 400),
        (b'{"records": 5}', "application/json", 422),
        (b'{"other": []}', "application/json", 422),
        (b"source_ref,occurred_at\n\xff\xfe,1\n", "text/csv", 400),
        (b"", "text/csv", 400),
        (b"x", "text/plain", 415),
        (b"source_ref,colour\n1,2\n", "text/csv", 422),
        (b'{"records": [' + b"[" * 10_000 + b"]" * 10_000 + b"]}", "application/json", 400),
        (
            b'{"records": [{"category": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001 + b"]}",
            "application/json",
            400,
        ),
    ]
    for body, media, status in cases:
        response = await client.post(PUSH, content=body, headers={**headers, "Content-Type": media})
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/healthz")).status_code == 200


async def test_body_over_limit_is_413(make_client: Any) -> None:
    client = await make_client(max_body_bytes=1000)
    response = await push(client, [crime(f"g{i}") for i in range(50)])
    assert response.status_code == 413


async def test_unknown_dataset_is_404_naming_it(client: Client) -> None:
    response = await client.post(
        "/v1/datasets/nope/records", json={"records": []}, headers=token("gmp")
    )
    assert response.status_code == 404
    assert response.json()["dataset"] == "nope"


async def test_no_token_is_401(client: Client) -> None:
    assert (await client.post(PUSH, json={"records": []})).status_code == 401


async def test_push_and_batch_answers_match_their_declared_schemas(client: Client) -> None:
    answer = await push(client, [crime("s1"), {"source_ref": "s2"}])
    pushed = PushAnswer.model_validate(answer.json())
    assert (pushed.accepted, pushed.rejected) == (1, 1) and pushed.errors[0].row == 2
    status = BatchPublic.model_validate(await batch(client, pushed.batch_id))
    assert status.received == 2
    document = (await client.get("/openapi.json")).json()
    post = document["paths"][PUSH.replace("police-crime", "{dataset}")]["post"]
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PushAnswer"
    }


async def test_holdings_digest_what_is_held_and_outbox_metrics_follow_the_relay(
    client: Client, receiver: Any
) -> None:
    await push(client, [crime(f"h{i}") for i in range(3)])
    service = token("depersonalise", ["service"])
    metrics = (await client.get("/metrics")).text
    assert "csp_outbox_depth 1.0" in metrics and "csp_outbox_pending_records 3.0" in metrics
    assert await drain(client) == 3
    assert (
        await client.delete(
            f"{PUSH}/h1", headers=token("gmp", action="retract", dataset="police-crime")
        )
    ).status_code == 204
    answer = (await client.get("/internal/holdings?dataset=police-crime", headers=service)).json()
    replayed = (await client.get("/internal/records?dataset=police-crime", headers=service)).json()
    [held] = answer["holdings"]
    assert (held["provider"], held["count"]) == ("gmp", 2)
    assert held["digest"] == revision_digest(e["revision"] for e in replayed["events"])
    assert all(e["revision"] < answer["horizon"] for e in replayed["events"])
    assert (
        await client.get("/internal/holdings?dataset=police-crime", headers=token())
    ).status_code == 403
    await drain(client)
    metrics = (await client.get("/metrics")).text
    assert "csp_outbox_depth 0.0" in metrics and "csp_outbox_oldest_age_seconds 0.0" in metrics
