from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.ingest.retention import purge
from tests.conftest import RECORD_KEY_SECRET
from tests.ingest.conftest import Client, crime, drain, token

PUSH = "/v1/datasets/police-crime/records"
POSTCODES = 'PC,PQ,EA,NO\n"M1  1AD",10,383825,398598\n"M14 5AB",10,385000,395000\nBAD,1,x,y\n'


async def load_postcodes(client: Client) -> dict[str, Any]:
    response = await client.post(
        "/v1/postcodes",
        content=POSTCODES.encode(),
        headers={**token("ops", ["admin"]), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_postcode_layer_geocodes_records(client: Client, receiver: Any) -> None:
    refused = await client.post("/v1/postcodes", content=POSTCODES.encode(), headers=token("gmp"))
    assert refused.status_code == 403
    assert await load_postcodes(client) == {"loaded": 2, "skipped": 1, "postcodes": 2}
    records = [
        {"source_ref": "p1", "occurred_at": "2024-03-01", "category": "ASB", "postcode": "m11ad"},
        {"source_ref": "p2", "occurred_at": "2024-03-01", "category": "ASB", "postcode": "M99 9ZZ"},
        {"source_ref": "p3", "occurred_at": "2024-03-01", "category": "ASB"},
    ]
    response = await client.post(
        "/v1/datasets/council-asb/records", json={"records": records}, headers=token("mcc")
    )
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 0)
    await drain(client)
    by_source = sorted((e["location_source"], e["easting"]) for e in receiver.state.events)
    assert by_source == [("none", None), ("none", None), ("postcode", 383825.0)]
    strict = await client.post(PUSH, json={"records": [records[1]]}, headers=token("gmp"))
    assert strict.json()["errors"][0]["field"] == "postcode"
    quality = await client.get("/v1/datasets/council-asb/quality", headers=token("mcc"))
    (period,) = quality.json()["periods"]
    assert period["geocoded"] == {"coordinates": 0, "postcode": 1, "none": 2}
    assert period["completeness"]["postcode"] == round(2 / 3, 4)


def reader(**claims: Any) -> dict[str, str]:
    base: dict[str, Any] = {
        "action": "read",
        "dataset": "police-crime",
        "level": "personal",
        "providers": ["gmp"],
        "window": ["2024-01-01", "2024-06-30"],
        "agreement": "isa-1",
        "version": 1,
    }
    base.update(claims)
    return token("mcc", **base)


async def test_personal_reads_only_agreed_providers_fields_dates(client: Client) -> None:
    await client.post(
        PUSH,
        json={
            "records": [
                crime("x1", category="=HYPERLINK(1)"),
                crime("x2", occurred_at="2023-05-01"),
                crime("x3", occurred_at="2024-06-30T23:00:00Z"),
            ]
        },
        headers=token("gmp"),
    )
    await client.post(PUSH, json={"records": [crime("y1")]}, headers=token("other"))
    fields = ["source_ref", "occurred_at", "category"]
    response = await client.get(
        PUSH, params={"level": "personal", "limit": 1}, headers=reader(fields=fields)
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["records"] == [
        {
            "provider": "gmp",
            "source_ref": "x1",
            "occurred_at": "2024-01-05T22:10:00Z",
            "category": "=HYPERLINK(1)",
        }
    ]
    assert page["next_cursor"] is not None
    assert response.headers["csp-record-count"] == "1"
    assert response.headers["link"].startswith("</v1/datasets/police-crime/records?")
    rest = await client.get(
        PUSH,
        params={"level": "personal", "cursor": page["next_cursor"], "format": "csv"},
        headers=reader(fields=fields),
    )
    rows = list(csv.reader(io.StringIO(rest.text)))
    assert rows == [["provider", *fields], ["gmp", "x3", "2024-06-30T23:00:00Z", "Burglary"]]
    first_csv = await client.get(
        PUSH, params={"level": "personal", "limit": 1}, headers={**reader(), "Accept": "text/csv"}
    )
    assert "'=HYPERLINK(1)" in first_csv.text
    denied = await client.get(PUSH, params={"level": "personal"}, headers=reader(level="aggregate"))
    assert denied.status_code == 403
    wrong_level = await client.get(PUSH, headers=reader())
    assert wrong_level.status_code == 400
    drug = await client.get(
        "/v1/datasets/drug-treatment/records", params={"level": "personal"}, headers=reader()
    )
    assert drug.status_code == 403


async def test_retention_purge_deletes_and_emits(client: Client, receiver: Any) -> None:
    await client.post(PUSH, json={"records": [crime("old1"), crime("old2")]}, headers=token("gmp"))
    await client.post(PUSH, json={"records": [crime("keep")]}, headers=token("other"))
    await drain(client)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(days=40)
    rules = [
        {"provider": "gmp", "dataset": "police-crime", "retention_days": 30},
        {"provider": "other", "dataset": "police-crime", "retention_days": 365},
    ]
    entries = purge(engine, RECORD_KEY_SECRET, rules, now=later)
    assert [e["deleted"] for e in entries] == [2, 0]
    await drain(client)
    assert [e["op"] for e in receiver.state.events[-2:]] == ["delete", "delete"]
    history = await client.get("/v1/purges", headers=token("ops", ["admin"]))
    assert [e["deleted"] for e in history.json()["purges"]] == [0, 2]
    assert (await client.get("/v1/purges", headers=token("gmp"))).status_code == 403
    # The gateway takes the log in for its audit, oldest first, from a cursor.
    first_id = history.json()["purges"][-1]["id"]
    taken = await client.get("/internal/purges", headers=token("gateway", ["service"]))
    assert [(e["id"], e["deleted"]) for e in taken.json()["purges"]] == [
        (first_id, 2),
        (first_id + 1, 0),
    ]
    later_ones = await client.get(
        "/internal/purges", params={"after": first_id}, headers=token("gateway", ["service"])
    )
    assert [e["id"] for e in later_ones.json()["purges"]] == [first_id + 1]
    assert (await client.get("/internal/purges", headers=token("gmp"))).status_code == 403


async def test_purge_asks_agreements_for_retention(database_url: Any) -> None:
    import asyncio

    from fastapi import FastAPI

    from services.ingest.main import create_app
    from services.ingest.settings import Settings

    agreements = FastAPI()

    @agreements.get("/internal/retention")
    async def retention() -> list[dict[str, Any]]:
        return [{"provider": "gmp", "dataset": "police-crime", "retention_days": 0}]

    settings = Settings(
        database_url=database_url("ingest"),
        relay_enabled=False,
        purge_interval_seconds=0.5,
    )
    app = create_app(settings, agreements_transport=httpx.ASGITransport(app=agreements))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest"
        ) as client,
    ):
        await client.post(PUSH, json={"records": [crime("z1")]}, headers=token("gmp"))
        purged: list[Any] = []
        for _ in range(40):
            await asyncio.sleep(0.25)
            history = await client.get("/v1/purges", headers=token("ops", ["admin"]))
            purged = [e for e in history.json()["purges"] if e["deleted"]]
            if purged:
                break
    assert purged and purged[0]["deleted"] == 1 and purged[0]["retention_days"] == 0


async def test_replay_streams_current_records(client: Client) -> None:
    await client.post(
        PUSH, json={"records": [crime(f"r{i}") for i in range(5)]}, headers=token("gmp")
    )
    service = token("depersonalise", ["service"])
    page = await client.get(
        "/internal/records", params={"dataset": "police-crime", "limit": 3}, headers=service
    )
    body = page.json()
    assert len(body["events"]) == 3 and body["next"] is not None
    rest = await client.get(
        "/internal/records",
        params={"dataset": "police-crime", "after": body["next"]},
        headers=service,
    )
    assert len(rest.json()["events"]) == 2 and rest.json()["next"] is None
    assert (
        await client.get(
            "/internal/records", params={"dataset": "police-crime"}, headers=token("gmp")
        )
    ).status_code == 403


async def test_catalogue_routes(client: Client) -> None:
    listing = (await client.get("/v1/datasets", headers=token("gmp"))).json()
    assert len(listing["datasets"]) == 10  # two cohort datasets: offender-offence, oasys-assessment
    fire = (await client.get("/v1/datasets/fire-incident", headers=token("gmp"))).json()
    assert len(fire["schema"]["properties"]["category"]["enum"]) == 5
    assert fire["csv_template"].startswith("source_ref,")
    template = await client.get(
        "/v1/datasets/ae-assault", params={"format": "csv"}, headers=token("gmp")
    )
    assert template.headers["content-type"].startswith("text/csv")
    assert "site_code" in template.text and "arrived_at" in template.text
    missing = await client.get("/v1/datasets/nope", headers=token("gmp"))
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    openapi = (await client.get("/openapi.json")).json()
    body = openapi["paths"]["/v1/datasets/{dataset}/records"]["post"]["requestBody"]
    assert len(body["content"]["application/json"]["schema"]["oneOf"]) == 10


async def test_fire_and_incident_lists_are_strict(client: Client) -> None:
    fire = {"source_ref": "f", "occurred_at": "2024-01-01", "easting": 383000, "northing": 398000}
    ok = await client.post(
        "/v1/datasets/fire-incident/records",
        json={
            "records": [
                {**fire, "category": "deliberate primary fire in vehicle"},
                {**fire, "source_ref": "g", "category": "Chip pan"},
            ]
        },
        headers=token("gmfrs"),
    )
    assert [e["field"] for e in ok.json()["errors"]] == ["category"]
    incident = {**fire, "category": "Noise", "qualifier": "loud"}
    bad = await client.post(
        "/v1/datasets/police-incident/records", json={"records": [incident]}, headers=token("gmp")
    )
    assert bad.json()["errors"][0]["field"] == "qualifier"


async def test_personal_reads_apply_each_providers_grant_to_its_records(client: Client) -> None:
    """Scenario 1 of the privacy issue at ingest: btp's grant to this reader names three fields
    and ends in March, gmp's names every field; neither widens the other."""
    await client.post(
        PUSH, json={"records": [crime("g1", outcome="Charged")]}, headers=token("gmp")
    )
    await client.post(
        PUSH,
        json={"records": [crime("b1", outcome="Charged"), crime("b2", occurred_at="2024-05-01")]},
        headers=token("btp"),
    )
    grants = [
        {"provider": "gmp", "agreement": "isa-1", "version": 1, "level": "personal",
         "fields": None, "from": "2024-01-01", "to": "2024-06-30", "purpose": "p"},
        {"provider": "btp", "agreement": "isa-2", "version": 3, "level": "personal",
         "fields": ["source_ref", "occurred_at", "category"], "from": "2024-01-01",
         "to": "2024-03-31", "purpose": "p"},
    ]  # fmt: skip
    headers = reader(providers=["btp", "gmp"], fields=None, grants=grants)
    response = await client.get(PUSH, params={"level": "personal"}, headers=headers)
    assert response.status_code == 200, response.text
    by_ref = {r["source_ref"]: r for r in response.json()["records"]}
    assert set(by_ref) == {"g1", "b1"}
    assert by_ref["g1"]["outcome"] == "Charged" and by_ref["g1"]["easting"] == 383000.5
    assert by_ref["b1"] == {
        "provider": "btp",
        "source_ref": "b1",
        "occurred_at": "2024-01-05T22:10:00Z",
        "category": "Burglary",
    }


async def test_records_no_agreement_covers_go_retention_days_after_it_ended(
    client: Client, receiver: Any
) -> None:
    await client.post(PUSH, json={"records": [crime("e1"), crime("e2")]}, headers=token("gmp"))
    await drain(client)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    ended = (now - timedelta(days=10)).date().isoformat()
    rule = {"provider": "gmp", "dataset": "police-crime", "retention_days": 30, "ended": ended}
    # Received today, the agreement ended ten days ago: kept for twenty more days...
    assert purge(engine, RECORD_KEY_SECRET, [rule], now=now)[0]["deleted"] == 0
    # ...and all gone, raw and derived, once thirty days have passed since it ended.
    assert purge(engine, RECORD_KEY_SECRET, [rule], now=now + timedelta(days=20))[0]["deleted"] == 2
    await drain(client)
    assert [e["op"] for e in receiver.state.events[-2:]] == ["delete", "delete"]


async def test_operators_erase_a_providers_records_and_retraction_names_unknown_refs(
    client: Client, receiver: Any
) -> None:
    await client.post(
        PUSH, json={"records": [crime("s1"), crime("s2"), crime("s3")]}, headers=token("gmp")
    )
    await client.post(PUSH, json={"records": [crime("s1")]}, headers=token("other"))
    await drain(client)
    ops = token("ops", ["admin"])
    refused = await client.post(
        "/v1/erasures", json={"provider": "gmp", "dataset": "police-crime"}, headers=token("gmp")
    )
    assert refused.status_code == 403
    unknown = await client.post(
        "/v1/erasures", json={"provider": "gmp", "dataset": "nope"}, headers=ops
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "dataset"
    one = await client.post(
        "/v1/erasures",
        json={"provider": "gmp", "dataset": "police-crime", "source_refs": ["s1"]},
        headers=ops,
    )
    assert one.status_code == 200, one.text
    assert one.json()["deleted"] == 1 and one.headers["CSP-Record-Count"] == "1"
    rest = await client.post(
        "/v1/erasures", json={"provider": "gmp", "dataset": "police-crime"}, headers=ops
    )
    assert rest.json()["deleted"] == 2
    await drain(client)
    assert [e["op"] for e in receiver.state.events[-3:]] == ["delete"] * 3
    logged = (await client.get("/internal/purges", headers=token("gateway", ["service"]))).json()
    assert [(e["retention_days"], e["deleted"]) for e in logged["purges"]] == [(0, 1), (0, 2)]
    # The other provider's record of the same reference is untouched.
    decided = {"action": "retract", "dataset": "police-crime"}  # as the gateway's token says
    kept = await client.delete(f"{PUSH}/s1", headers=token("other", **decided))
    assert kept.status_code == 204
    gone = await client.delete(f"{PUSH}/s2", headers=token("gmp", **decided))
    assert gone.status_code == 404
    assert gone.json()["field"] == "source_ref" and gone.json()["source_ref"] == "s2"
