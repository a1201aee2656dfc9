"""The depersonalise service over HTTP, in-process, with the demo layer and a fake ingest."""

from __future__ import annotations

import csv
import io
import json

from services.depersonalise.demo import demo_layer
from services.depersonalise.models import AggregateTable
from tests.depersonalise.conftest import (
    admin,
    event,
    reader,
    service,
    token,
)

SECRET_TEXT = "John Smith of 12 Acacia Avenue"


def load_demo(client, name: str = "demo") -> dict:
    answer = client.post(
        f"/v1/geographies/{name}?code_field=code&name_field=name",
        content=json.dumps(demo_layer()),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/v1/geographies/{name}/status"
    return answer.json()


# The demo area given (382000, 398000), a 4 km cell's centre on the corner of four areas.
AT_GRID_CENTRE = "DEMO0020"


def load_distant_estimate(client) -> None:
    """A snap layer whose one point (12 households) lies over 2 km from the test points but in
    their 4 km grid cell: the fallback grid then has an estimate, coarsened to 4 km."""
    from tests.depersonalise.conftest import wait_rebuild

    answer = client.post(
        "/v1/snap-layers/estimate?k=8",
        content="easting,northing,households\n380900,399600,12\n",
        headers={**admin(), "Content-Type": "text/csv"},
    )
    assert answer.status_code == 201, answer.text
    assert wait_rebuild(client)["state"] == "complete"


def push(client, fake, events: list[dict]) -> dict:
    fake.keep(events)
    answer = client.post("/internal/events", json={"events": events}, headers=service())
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_without_internal_token_every_route_answers_401(make_client) -> None:
    client, _ = make_client()
    for method, path in [
        ("get", "/v1/geographies"),
        ("get", "/v1/datasets/police-crime/aggregates?geography=demo"),
        ("get", "/v1/datasets/police-crime/records"),
        ("post", "/internal/events"),
    ]:
        answer = getattr(client, method)(path)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"


def test_layer_loads_are_admin_only_and_events_service_only(make_client) -> None:
    client, _ = make_client()
    answer = client.post(
        "/v1/geographies/demo?code_field=code", content=json.dumps(demo_layer()), headers=token()
    )
    assert answer.status_code == 403
    answer = client.post("/internal/events", json={"events": []}, headers=token())
    assert answer.status_code == 403


def test_demo_layer_loads_and_is_listed_with_its_area_count(make_client) -> None:
    client, _ = make_client()
    loaded = load_demo(client)
    assert loaded["areas"] == 36
    assert loaded["rebuild"]["state"] == "complete"
    listing = client.get("/v1/geographies", headers=token()).json()
    assert [(layer["name"], layer["areas"], layer["status"]) for layer in listing["layers"]] == [
        ("demo", 36, "active")
    ]


def test_a_redelivered_event_is_stored_once_and_answered_stored(make_client) -> None:
    # The relay lost the first answer: the same revision again must count, and not twice.
    client, fake = make_client()
    load_demo(client)
    events = [event(i + 1, f"r{i}", 383100, 397100, revision=5) for i in range(5)]
    assert push(client, fake, events)["depersonalised"] == 5
    again = push(client, fake, events)
    assert {r["status"] for r in again["results"]} == {"stored"}
    body = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31",
        headers=reader(),
    ).json()
    assert body["disclosure"]["records"] == 5


def test_events_apply_only_newer_revisions_and_answer_the_contract(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    first = push(client, fake, [event(1, "k1", 383100, 397100, revision=2)])
    assert first == {"results": [{"event_id": 1, "status": "stored"}], "depersonalised": 1}
    again = push(client, fake, [event(2, "k1", 383100, 397100, revision=1)])
    assert again["results"] == [{"event_id": 2, "status": "stale"}]
    deleted = client.post(
        "/internal/events",
        json={
            "events": [
                {
                    "event_id": 3,
                    "op": "delete",
                    "dataset": "police-crime",
                    "provider": "gmp",
                    "record_key": "k1",
                    "revision": 3,
                },
                {
                    "event_id": 4,
                    "op": "upsert",
                    "dataset": "no-such-dataset",
                    "provider": "gmp",
                    "record_key": "k9",
                    "revision": 1,
                    "record": {},
                },
            ]
        },
        headers=service(),
    ).json()
    assert deleted["results"] == [
        {"event_id": 3, "status": "deleted"},
        {"event_id": 4, "status": "skipped"},
    ]
    # A late upsert of the deleted record's older revision must not bring it back.
    late = push(client, fake, [event(5, "k1", 383100, 397100, revision=2)])
    assert late["results"] == [{"event_id": 5, "status": "stale"}]
    read = client.get("/v1/datasets/police-crime/records", headers=reader(level="depersonalised"))
    assert read.json()["records"] == []
    assert read.headers["csp-record-count"] == "0"


def test_aggregates_are_complete_suppressed_and_released(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    events = [event(i, f"a{i}", 380100 + (i % 3), 394100, provider="gmp") for i in range(12)]
    events += [event(100 + i, f"b{i}", 381100, 394100) for i in range(2)]
    events += [event(400 + i, f"f{i}", 382100, 394100) for i in range(7)]
    events += [event(200, "c0", 383100, 397100, provider="other-force")]
    events += [event(300, "d0", 500000, 500000)]
    push(client, fake, events)
    answer = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&period=month"
        "&from=2024-01-01&to=2024-03-31",
        headers=reader(),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # A table with a suppressed cell publishes no total: the gateway's audit gets no count.
    assert "csp-record-count" not in answer.headers
    assert list(body) == [
        "dataset",
        "geography",
        "period",
        "rule",
        "cells",
        "disclosure",
        "agreement",
        "release_id",
    ]
    assert body["rule"] == {
        "threshold": 5,
        "round_to": None,
        "secondary": True,
        "perturbation": None,
    }
    assert AggregateTable.model_validate(body).model_dump(exclude_unset=True) == body
    assert len(body["cells"]) == 36 * 3
    disclosure = body["disclosure"]
    assert disclosure["cells"] == 108 and disclosure["suppressed"] == 1
    assert disclosure["protection"] == "release-lattice"
    # Totals would give the suppressed 2 away (21 - 12 - 7): not published.
    assert disclosure["records"] is None and disclosure["records_outside_layer"] is None
    assert disclosure["suppressed_primary"] is None and disclosure["suppressed_secondary"] is None
    cell = {(c["area"], c["period"]): c for c in body["cells"]}
    assert cell[("DEMO0001", "2024-01")]["count"] == 12
    assert cell[("DEMO0002", "2024-01")] == {
        "area": "DEMO0002",
        "area_name": "Demo area 2 (not a real boundary)",
        "period": "2024-01",
        "count": None,
        "suppressed": True,
    }
    published = [c["count"] for c in body["cells"] if c["count"] is not None]
    assert not any(1 <= n < 5 for n in published)
    # No complementary cell in the table: no answer holds the 2 inside a published sum.
    assert cell[("DEMO0003", "2024-01")]["count"] == 7
    asked = str(answer.request.url).replace("period=month", "period=quarter")
    quarter = client.get(asked, headers=reader()).json()
    by_area = {c["area"]: c for c in quarter["cells"]}
    assert by_area["DEMO0002"] == {**cell[("DEMO0002", "2024-01")], "period": "2024-Q1"}
    assert (by_area["DEMO0001"]["count"], by_area["DEMO0003"]["count"]) == (12, 7)
    assert body["agreement"] == "agr-1" and body["release_id"]
    assert answer.headers["CSP-Release-ID"] == body["release_id"]
    kept = client.get(f"/v1/releases/{body['release_id']}", headers=reader())
    assert kept.status_code == 200, kept.text
    assert kept.json()["disclosure"] == body["disclosure"] and "cells" not in kept.json()
    assert client.get(f"/v1/releases/{body['release_id']}", headers=admin()).status_code == 200
    other = client.get(f"/v1/releases/{body['release_id']}", headers=token(sub="someone-else"))
    assert other.status_code == 404
    listing = client.get("/v1/geographies", headers=admin()).json()
    assert listing["records_outside_all_layers"] == 1
    # Hub-wide counts are the operators' to see; an agency learns only whether a rebuild runs.
    seen = client.get("/v1/geographies", headers=token()).json()
    assert "records_outside_all_layers" not in seen
    assert set(seen["rebuild"]) <= {"state"}


def test_threshold_may_rise_but_not_fall_below_the_floor(make_client) -> None:
    client, _ = make_client()
    load_demo(client)
    base = "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31"
    low = client.get(base + "&threshold=3", headers=reader())
    assert low.status_code == 422 and low.json()["field"] == "threshold"
    high = client.get(base + "&threshold=10", headers=reader())
    assert high.json()["rule"]["threshold"] == 10
    week = client.get(base + "&period=week", headers=reader())
    assert week.status_code == 422 and week.json()["field"] == "period"
    missing = client.get(base.replace("demo", "nowhere"), headers=reader())
    assert missing.status_code == 404 and missing.json()["field"] == "geography"


def test_csv_aggregates_neutralise_formulas_and_geojson_carries_polygons(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    push(
        client,
        fake,
        [event(i, f"e{i}", 380100, 394100, category="=HYPERLINK(1)") for i in range(6)],
    )
    base = (
        "/v1/datasets/police-crime/aggregates?geography=demo&by=category"
        "&from=2024-01-01&to=2024-01-31"
    )
    text = client.get(base + "&format=csv", headers=reader()).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["category"] == "'=HYPERLINK(1)"
    assert {r["count"] for r in rows} == {"6", "0"}
    geo = client.get(base, headers={**reader(), "Accept": "application/geo+json"}).json()
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 36
    ring = geo["features"][0]["geometry"]["coordinates"][0]
    assert all(-3 < lon < -2 and 53 < lat < 54 for lon, lat in ring)
    assert geo["disclosure"]["records"] == 6


def test_records_are_generalised_paginated_and_free_of_personal_fields(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    events = [
        event(
            i,
            f"r{i}",
            383123.4 + i,
            397456.7,
            occurred_at="2024-01-15T22:10:00Z",
            postcode="M14 5AB",
            location_description=SECRET_TEXT,
            offence_code="28E",
        )
        for i in range(5)
    ]
    events.append(event(9, "r9", 383000, 397000, category="Sexual assault on a female"))
    load_distant_estimate(client)
    push(client, fake, events)
    headers = reader(level="depersonalised")
    page = client.get("/v1/datasets/police-crime/records?limit=4", headers=headers).json()
    assert len(page["records"]) == 4 and page["next_cursor"]
    rest = client.get(
        f"/v1/datasets/police-crime/records?limit=4&cursor={page['next_cursor']}", headers=headers
    ).json()
    records = page["records"] + rest["records"]
    assert len(records) == 6 and rest["next_cursor"] is None
    first = records[0]
    # No snap point within 2 km, so the dataset's fallback applies: the 250 m grid, coarsened
    # until the cell holds k households by the snap layer's estimate (here 4 km).
    assert first["location_method"] == "grid4000"
    assert (first["easting"], first["northing"]) == (382000.0, 398000.0)
    assert first["occurred_at"] == "2024-01"
    assert first["postcode_outward"] == "M14"
    assert first["offence_code"] == "28E"
    assert first["areas"] == {"demo": AT_GRID_CENTRE}
    assert records[-1]["category"] == "Violence and sexual offences"
    text = json.dumps(page) + json.dumps(rest)
    for forbidden in (SECRET_TEXT, "location_description", "M14 5AB", "r0", "383123"):
        assert forbidden not in text
    assert page["disclosure"]["records"] == 6
    assert page["disclosure"]["share_without_location"] == 0
    assert page["disclosure"]["displacement_median_m"] is not None
    narrowed = client.get(
        "/v1/datasets/police-crime/records",
        headers=reader(level="depersonalised", fields=["occurred_at", "category"]),
    ).json()
    assert set(narrowed["records"][0]) == {"occurred_at", "category", "areas"}
    aggregate_only = client.get("/v1/datasets/police-crime/records", headers=reader())
    assert aggregate_only.status_code == 403
    other_dataset = client.get(
        "/v1/datasets/police-crime/records",
        headers=reader(dataset="fire-incident", level="depersonalised"),
    )
    assert other_dataset.status_code == 403


def test_stateless_depersonalise_takes_json_and_csv_and_stores_nothing(make_client) -> None:
    client, _ = make_client()
    load_demo(client)
    load_distant_estimate(client)
    records = [
        {
            "occurred_at": "2024-03-02",
            "category": "Robbery",
            "latitude": 53.4794,
            "longitude": -2.2453,
            "location_description": SECRET_TEXT,
            "source_ref": "X1",
        },
        {"occurred_at": "2024-03-09", "category": "Robbery"},
    ]
    answer = client.post(
        "/v1/depersonalise?dataset=police-crime", json={"records": records}, headers=admin()
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["records"][0]["occurred_at"] == "2024-03"
    assert body["records"][0]["areas"]["demo"].startswith("DEMO")
    assert body["records"][1]["easting"] is None
    assert body["disclosure"]["share_without_location"] == 0.5
    assert SECRET_TEXT not in answer.text and "X1" not in answer.text
    csv_body = (
        "occurred_at,category,easting,northing,location_description\n"
        "2024-03-02,Robbery,383100,397100,secret\n"
    )
    as_csv = client.post(
        "/v1/depersonalise?dataset=police-crime&format=csv",
        content=csv_body,
        headers={**reader(level="depersonalised"), "Content-Type": "text/csv"},
    )
    assert as_csv.status_code == 200
    assert "secret" not in as_csv.text and "location_description" not in as_csv.text
    stored = client.get(
        "/v1/datasets/police-crime/records", headers=reader(level="depersonalised")
    ).json()
    assert stored["records"] == []


def test_population_table_gives_rates_per_thousand(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    push(client, fake, [event(i, f"p{i}", 380100, 394100) for i in range(10)])
    table = "code,population\nDEMO0001,2000\nNOTINLAYER,5\n"
    loaded = client.post(
        "/v1/populations/demo", content=table, headers={**admin(), "Content-Type": "text/csv"}
    )
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["matched"] == 1 and loaded.json()["rows_not_in_layer"] == 1
    body = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31",
        headers=reader(),
    ).json()
    cell = next(c for c in body["cells"] if c["area"] == "DEMO0001")
    assert cell["rate"] == 5.0


def test_every_catalogue_dataset_drops_its_identifying_fields(make_client) -> None:
    from shared.catalogue import load_catalogue

    client, _ = make_client()
    load_demo(client)
    load_distant_estimate(client)
    from shared.identifiers import nhs_check_digit, pnc_check_character

    typed = {"integer": 1, "number": 1.5, "boolean": True, "date": "2024-05-06"}
    linked = {
        "pnc": f"19/123456{pnc_check_character(19, 123456)}",
        "cro": "123456/19X",
        "nhs": f"943476591{nhs_check_digit('943476591')}",
        "date_of_birth": "1990-02-03",
    }
    for name, dataset in load_catalogue().items():
        record: dict[str, object] = {
            f.name: linked.get(f.link or "")
            or typed.get(f.type, (f.allowed or [f"SECRET-{f.name}"[: f.max_length]])[0])
            for f in dataset.fields
        }
        record.update(occurred_at="2024-05-06T07:08:09Z", postcode="M14 5AB")
        record.update(easting=383100, northing=397100)
        record.pop("latitude", None), record.pop("longitude", None)
        for field_name in ("occurred_to", "arrived_at"):
            if field_name in record:
                record[field_name] = "2024-05-06T08:00:00Z"
        if "home_postcode" in record:
            record["home_postcode"] = "M14 5AB"
        answer = client.post(
            f"/v1/depersonalise?dataset={name}", json={"records": [record]}, headers=admin()
        )
        if dataset.max_level == "aggregate" or dataset.location == "none":
            # Never published record by record: the tool does not answer for it.
            assert answer.status_code == 403, (name, answer.text)
            continue
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["errors"] == [], (name, answer.text)
        out = answer.json()["records"][0]
        banned = {
            f.name
            for f in dataset.fields
            if f.classification in {"identifier", "free-text", "address", "special-category"}
        }
        assert not banned & set(out), name
        assert not any(f"SECRET-{b}" in answer.text for b in banned), name
        if dataset.generalisation.method == "area":
            assert out.get("easting") is None, name
            # No point is published and no household estimate is loaded: no code either.
            assert out["areas"] == {"demo": None}, name
        else:
            assert out["areas"] == {"demo": AT_GRID_CENTRE}, name
    health = client.get(
        "/v1/datasets/drug-treatment/records",
        headers=reader(dataset="drug-treatment", level="depersonalised"),
    )
    assert health.status_code == 403 and health.json()["rule"] == "dataset-aggregate-only"


def test_resource_hungry_queries_are_refused_not_crashed(make_client) -> None:
    client, _ = make_client(max_cells=10_000)
    load_demo(client)
    base = "/v1/datasets/police-crime/aggregates?geography=demo&period=month"
    endless = client.get(base + "&from=0001-01-01&to=9999-12-31", headers=reader())
    assert endless.status_code == 422 and endless.json()["field"] == "from"
    huge = client.get(base + "&from=1900-01-01&to=2199-12-31", headers=reader())
    assert huge.status_code == 422
    assert huge.json()["type"].endswith("table-too-large")
    deep = b'{"records": [' + b"[" * 10_000 + b"]" * 10_000 + b"]}"
    nested = client.post(
        "/v1/depersonalise?dataset=police-crime",
        content=deep,
        headers={**admin(), "Content-Type": "application/json"},
    )
    assert nested.status_code == 422 and nested.json()["field"] == "body"
    assert client.get("/healthz").status_code == 200


def test_each_providers_grant_applies_to_its_own_records_only(make_client) -> None:
    """gmp's grant names every field; btp's leaves `category` out and ends in January: btp's
    records show no category, are counted under `withheld`, and nothing after January shows."""
    client, fake = make_client()
    load_demo(client)
    january, february = "2024-01-15T10:00:00Z", "2024-02-15T10:00:00Z"
    events = [event(i, f"g{i}", 380100, 394100, occurred_at=january) for i in range(6)]
    events += [
        event(10 + i, f"b{i}", 380100, 394100, occurred_at=january, provider="btp")
        for i in range(6)
    ]
    events.append(event(30, "late", 380100, 394100, occurred_at=february, provider="btp"))
    push(client, fake, events)

    def grant(provider: str, fields: list[str] | None, to: str) -> dict:
        return {
            "provider": provider,
            "agreement": f"agr-{provider}",
            "version": 1,
            "level": "depersonalised",
            "fields": fields,
            "from": "2023-01-01",
            "to": to,
            "purpose": "strategic-assessment",
        }

    headers = token(
        sub="council",
        action="read",
        dataset="police-crime",
        level="depersonalised",
        providers=["btp", "gmp"],
        agreement="agr-btp",
        grants=[
            grant("gmp", None, "2024-12-31"),
            grant("btp", ["occurred_at", "easting", "northing"], "2024-01-31"),
        ],
    )
    records = client.get("/v1/datasets/police-crime/records", headers=headers).json()["records"]
    assert len(records) == 12
    assert sum("category" in r for r in records) == 6
    assert all(r["category"] == "Burglary" for r in records if "category" in r)
    table = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&by=category"
        "&from=2024-01-01&to=2024-02-29",
        headers=headers,
    ).json()
    counted = {(c["period"], c["category"]): c["count"] for c in table["cells"] if c["count"]}
    assert counted == {("2024-01", "Burglary"): 6, ("2024-01", "withheld"): 6}


def test_the_stateless_tool_answers_only_a_depersonalised_grant_and_validates_rows(
    make_client,
) -> None:
    client, _ = make_client()
    load_demo(client)
    rows = [
        {"occurred_at": "2024-03-02", "category": "Robbery", "easting": 383100, "northing": 397100},
        {"occurred_at": "2024-13-45", "category": "Robbery", "easting": 383100, "northing": 397100},
        {"occurred_at": "2024-03-02", "easting": "east", "northing": 397100},
    ]
    path = "/v1/depersonalise?dataset=police-crime"
    for headers in (
        token(),  # an agency with no decision at all
        reader(level="aggregate"),  # a grant below record level
        reader(dataset="fire-incident", level="depersonalised"),  # a grant on another dataset
    ):
        refused = client.post(path, json={"records": rows}, headers=headers)
        assert refused.status_code == 403, refused.text
    cohort = client.post(
        "/v1/depersonalise?dataset=offender-cohort",
        json={"records": rows},
        headers=reader(dataset="offender-cohort", level="personal"),
    )
    assert cohort.status_code == 403
    answer = client.post(path, json={"records": rows}, headers=reader(level="depersonalised"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["records"]) == 1 and body["records"][0]["occurred_at"] == "2024-03"
    assert {(e["row"], e["field"]) for e in body["errors"]} == {
        (2, "occurred_at"),
        (3, "category"),
        (3, "easting"),
    }
    assert (body["disclosure"]["received"], body["disclosure"]["rejected"]) == (3, 2)


def test_record_codes_come_from_the_published_point_and_otherwise_meet_k(make_client) -> None:
    """Issue scenario 2: a record near an area's edge is snapped to a point in the next area; it
    carries that area's code, not its precise point's (aggregates still count the precise one).
    Without a published point a code appears only for an area holding at least k households."""
    from tests.depersonalise.test_geography import wait_rebuild

    client, fake = make_client()
    load_demo(client)
    # Demo areas are 1 km squares from (380000, 394000): DEMO0001 then DEMO0002 to its east.
    near_edge = event(1, "a", 380950, 394500)
    push(client, fake, [near_edge])
    points = "easting,northing,households\n381010,394500,20\n"
    snapped = client.post(
        "/v1/snap-layers/edge?k=8", content=points, headers={**admin(), "Content-Type": "text/csv"}
    )
    assert snapped.status_code == 201, snapped.text
    assert wait_rebuild(client)["state"] == "complete"
    page = client.get(
        "/v1/datasets/police-crime/records", headers=reader(level="depersonalised")
    ).json()
    record = page["records"][0]
    assert record["location_method"] == "snap" and record["k"] == 20
    # k is published as an integer, in the disclosure report too.
    assert page["disclosure"]["k_min"] == 20 and isinstance(page["disclosure"]["k_min"], int)
    assert record["areas"] == {"demo": "DEMO0002"}
    table = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31"
        "&threshold=5",
        headers=reader(),
    ).json()
    cells = {c["area"]: c for c in table["cells"]}
    assert cells["DEMO0001"]["suppressed"] is True  # the 1, counted where it happened
    no_location = reader(level="depersonalised", fields=["occurred_at", "category"])
    hidden = client.get("/v1/datasets/police-crime/records", headers=no_location).json()
    assert "easting" not in hidden["records"][0]
    assert hidden["records"][0]["areas"] == {"demo": None}  # no household estimate loaded
    population = f"code,population\nDEMO0001,{8 * 2.36 + 1}\nDEMO0002,3\n"
    loaded = client.post(
        "/v1/populations/demo", content=population, headers={**admin(), "Content-Type": "text/csv"}
    )
    assert loaded.status_code == 201, loaded.text
    shown = client.get("/v1/datasets/police-crime/records", headers=no_location).json()
    assert shown["records"][0]["areas"] == {"demo": "DEMO0001"}
    small = client.post(
        "/v1/snap-layers/small?k=3", content=points, headers={**admin(), "Content-Type": "text/csv"}
    )
    assert small.status_code == 422 and small.json()["field"] == "k"
