"""Loading, repairing, deriving and replacing layers, and the replay that rebuilds records."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import shapely

from services.depersonalise.boundary_files import detect_format, read_layer
from services.depersonalise.demo import demo_layer, load_layer_file
from services.depersonalise.snapping import build_snap_layer
from shared.errors import ProblemError
from tests.conftest import require_data
from tests.depersonalise.conftest import admin, event, reader, service, token, wait_rebuild
from tests.depersonalise.test_api import load_demo, push


def collection(features: list[tuple[str, Any]], crs: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"code": code}, "geometry": geometry}
            for code, geometry in features
        ],
    }
    if crs:
        body["crs"] = {"type": "name", "properties": {"name": crs}}
    return json.dumps(body).encode()


BNG = "urn:ogc:def:crs:EPSG::27700"
SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}
BOWTIE = {"type": "Polygon", "coordinates": [[[20, 0], [30, 10], [30, 0], [20, 10], [20, 0]]]}


def test_an_invalid_polygon_is_repaired_and_counted() -> None:
    layer = read_layer(collection([("A", SQUARE), ("B", BOWTIE)], BNG), "t", "code")
    assert layer.repaired == 1
    assert all(shapely.is_valid(layer.geoms))
    assert layer.codes_for_point_check() if hasattr(layer, "codes_for_point_check") else True
    assert layer.codes_for(__import__("numpy").array([22.0]), __import__("numpy").array([5.0])) == [
        "B"
    ]


def test_unusable_features_are_reported_not_dropped() -> None:
    point = {"type": "Point", "coordinates": [5, 5]}
    with pytest.raises(ProblemError) as caught:
        read_layer(collection([("A", SQUARE), ("A", SQUARE), ("C", point)], BNG), "t", "code")
    problem = caught.value
    assert problem.status == 422
    messages = {(e.get("code"), e["message"]) for e in problem.extra["errors"]}
    assert ("C", "geometry empty or not polygonal") in messages
    assert ("A", "duplicate area code") in messages
    with pytest.raises(ProblemError) as caught:
        read_layer(collection([("A", SQUARE)], BNG), "t", "nope")
    assert caught.value.extra["field"] == "code_field"


def test_formats_are_detected_by_magic_bytes() -> None:
    assert detect_format(b"PK\x03\x04rest") == "shapefile-zip"
    assert detect_format(b"SQLite format 3\x00rest") == "gpkg"
    assert detect_format(b'  {"type": "FeatureCollection"}') == "geojson"
    with pytest.raises(ProblemError) as caught:
        detect_format(b"\x00\x01", "application/octet-stream")
    assert caught.value.status == 415


def test_a_bad_upload_answers_problem_json_naming_the_field(make_client) -> None:
    client, _ = make_client()
    answer = client.post(
        "/v1/geographies/demo?code_field=missing",
        content=json.dumps(demo_layer()),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == "code_field"
    assert client.get("/v1/geographies", headers=admin()).json()["layers"] == []


def test_a_parent_layer_is_derived_by_dissolving_on_a_code_slice(make_client) -> None:
    client, _ = make_client()
    load_demo(client)
    # Codes DEMO0001..DEMO0036: the first seven characters group them in tens.
    answer = client.post(
        "/v1/geographies/demo-tens/derive",
        json={"from": "demo", "code_from": {"source": "code", "start": 0, "end": 7}},
        headers=admin(),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["areas"] == 4
    lookup = {f"DEMO{i:04d}": ("NORTH" if i > 18 else "SOUTH") for i in range(1, 37)}
    halves = client.post(
        "/v1/geographies/halves/derive",
        json={"from": "demo", "code_from": {"lookup": lookup}},
        headers=admin(),
    )
    assert halves.json()["areas"] == 2
    partial = client.post(
        "/v1/geographies/bad/derive",
        json={"from": "demo", "code_from": {"lookup": {"DEMO0001": "X"}}},
        headers=admin(),
    )
    assert partial.status_code == 422 and partial.json()["field"] == "code_from"
    listing = client.get("/v1/geographies", headers=token()).json()
    assert {entry["name"]: entry["areas"] for entry in listing["layers"]} == {
        "demo": 36,
        "demo-tens": 4,
        "halves": 2,
    }


def test_msoa_dissolves_from_the_manchester_lsoa_label(make_client) -> None:
    import geopandas as gpd

    from tests.depersonalise.test_realdata import LSOA, zipped_shapefile

    shp = require_data(*LSOA)
    client, _ = make_client()
    client.post(
        "/v1/geographies/lsoa21?code_field=lsoa21cd&name_field=lsoa21nm",
        content=zipped_shapefile(shp),
        headers={**admin(), "Content-Type": "application/zip"},
    )
    frame = gpd.read_file(shp)
    lookup = dict(zip(frame["lsoa21cd"], frame["label"].str[27:36], strict=True))
    answer = client.post(
        "/v1/geographies/msoa21/derive",
        json={
            "from": "lsoa21",
            "code_from": {"lookup": lookup},
            "name_from": {"source": "name", "start": 0, "end": -1},
        },
        headers=admin(),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["areas"] == len(set(lookup.values()))
    assert all(code.startswith("E02") for code in set(lookup.values()))


def test_replacing_a_layer_replays_from_ingest_and_serves_old_answers_meanwhile(
    make_client,
) -> None:
    client, fake = make_client()
    load_demo(client)
    push(client, fake, [event(i + 1, f"k{i}", 380100, 394100) for i in range(8)])
    fake.gate.clear()  # ingest answers only when the test lets it
    bigger = demo_layer(columns=2, rows=2, size_metres=3000)
    answer = client.post(
        "/v1/geographies/demo?code_field=code&name_field=name",
        content=json.dumps(bigger),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )
    assert answer.status_code == 202
    assert answer.json()["rebuild"]["state"] == "running"
    assert answer.json()["status"] == "pending" and 0 <= answer.json()["progress"] < 1
    listing = client.get("/v1/geographies", headers=admin()).json()
    assert listing["layers"][0]["areas"] == 36 and listing["layers"][0]["pending"]["areas"] == 4
    assert 0 <= listing["layers"][0]["progress"] < 1
    status = client.get(answer.headers["location"], headers=admin())
    assert status.status_code == 200
    assert status.json()["status"] == "pending" and int(status.headers["retry-after"]) >= 1
    during = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31",
        headers=reader(),
    ).json()
    assert len(during["cells"]) == 36
    # An event arriving during the rebuild reaches both generations.
    push(client, fake, [event(50, "late", 380100, 394100)])
    fake.gate.set()
    assert wait_rebuild(client)["state"] == "complete"
    after = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31",
        headers=reader(),
    ).json()
    assert len(after["cells"]) == 4
    assert after["disclosure"]["records"] == 9
    assert sorted(c["count"] or 0 for c in after["cells"]) == [0, 0, 0, 9]


def load_other_while_ingest_is_down(client, fake) -> None:
    load_demo(client)
    push(client, fake, [event(i + 1, f"k{i}", 380100, 394100) for i in range(6)])
    fake.down = True
    client.post(
        "/v1/geographies/other?code_field=code",
        content=json.dumps(demo_layer(size_metres=500)),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )


def test_when_ingest_is_down_the_old_records_stay_and_the_failure_shows(make_client) -> None:
    client, fake = make_client(replay_retry_seconds=0)
    load_other_while_ingest_is_down(client, fake)
    state = wait_rebuild(client)
    assert state["state"] == "failed" and "ingest unreachable" in state["error"]
    listing = client.get("/v1/geographies", headers=admin()).json()
    assert {e["name"]: e["status"] for e in listing["layers"]} == {
        "demo": "active",
        "other": "pending",
    }
    body = client.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31",
        headers=reader(),
    ).json()
    assert body["disclosure"]["records"] == 6
    pending = client.get("/v1/datasets/police-crime/aggregates?geography=other", headers=reader())
    assert pending.status_code == 409
    assert pending.json()["type"].endswith("layer-rebuilding")
    assert 1 <= int(pending.headers["retry-after"]) <= 60
    fake.down = False
    retried = client.post("/v1/geographies/rebuild", headers=admin())
    assert retried.status_code == 202
    assert wait_rebuild(client)["state"] == "complete"
    listing = client.get("/v1/geographies", headers=admin()).json()
    assert {e["name"]: e["status"] for e in listing["layers"]} == {
        "demo": "active",
        "other": "active",
    }


def test_a_rebuild_waits_for_ingest_to_come_back_and_completes_by_itself(make_client) -> None:
    client, fake = make_client(replay_retry_seconds=30)
    load_other_while_ingest_is_down(client, fake)
    deadline = time.monotonic() + 10
    state: dict[str, Any] = {}
    while time.monotonic() < deadline and not state.get("waiting"):
        state = client.get("/v1/geographies", headers=admin()).json()["rebuild"]
        time.sleep(0.05)
    assert state["state"] == "running" and "ingest unreachable" in state["waiting"]
    fake.down = False
    done = wait_rebuild(client)
    assert done["state"] == "complete" and "waiting" not in done
    served = client.get("/v1/geographies/other/status", headers=admin())
    assert served.json()["status"] == "active" and served.json()["progress"] == 1.0
    assert "retry-after" not in served.headers
    listing = client.get("/v1/geographies", headers=admin()).json()
    assert {e["name"]: e["status"] for e in listing["layers"]} == {
        "demo": "active",
        "other": "active",
    }


def test_layers_survive_a_restart(make_client, database_url) -> None:
    url = database_url("depersonalise")
    client, _ = make_client(url)
    load_demo(client)
    client.close()
    again, _ = make_client(url)
    listing = again.get("/v1/geographies", headers=admin()).json()
    assert listing["layers"][0]["areas"] == 36
    assert len(again.app.state.depersonalise.registry.active["demo"]) == 36


def test_snap_layer_build_merges_small_catchments() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 5000, 2000), rng.uniform(0, 5000, 2000)
    households = rng.integers(0, 6, 2000)
    snap = build_snap_layer("t", x, y, households, k=8)
    assert snap.report["catchment"]["min"] >= 8
    assert snap.report["points"] < snap.report["candidates"]
    owner = snap.nearest(x, y)[1]
    assert np.bincount(owner, weights=households, minlength=len(snap)).min() >= 8


def test_snap_layer_route_answers_the_build_report(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    push(client, fake, [event(1, "k1", 383010, 397010), event(2, "far", 420000, 397010)])
    rows = "easting,northing,households\n" + "\n".join(
        f"{383000 + 50 * i},{397000 + 50 * j},{(i + j) % 4}" for i in range(20) for j in range(20)
    )
    answer = client.post(
        "/v1/snap-layers/test-points?k=8",
        content=rows,
        headers={**admin(), "Content-Type": "text/csv"},
    )
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert report["candidates"] == 400 and report["catchment"]["min"] >= 8
    assert wait_rebuild(client)["state"] == "complete"
    record, far = client.get(
        "/v1/datasets/police-crime/records", headers=reader(level="depersonalised")
    ).json()["records"]
    assert record["location_method"] == "snap" and record["k"] >= 8
    # Beyond the 2 km reach, and no household estimate near it: the location is withheld.
    assert far["location_method"] == "none" and far["k"] is None and far["easting"] is None
    bad = client.post(
        "/v1/snap-layers/x", content="a,b\n1,2\n", headers={**admin(), "Content-Type": "text/csv"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "easting"


def test_load_layer_file_checks_then_uploads_with_progress(tmp_path, make_client) -> None:
    import httpx

    seen: list[tuple[str, float]] = []
    path = tmp_path / "demo.geojson"
    path.write_text(json.dumps(demo_layer()))
    received: dict[str, Any] = {}

    def gateway(request: httpx.Request) -> httpx.Response:
        received["auth"] = request.headers["Authorization"]
        received["size"] = len(request.read())
        return httpx.Response(201, json={"layer": "demo", "areas": 36})

    answer = load_layer_file(
        path,
        "demo",
        "code",
        "name",
        url="http://gw",
        api_key="csp_x",
        progress=lambda stage, f: seen.append((stage, f)),
        transport=httpx.MockTransport(gateway),
    )
    assert answer["areas"] == 36
    assert received == {"auth": "Bearer csp_x", "size": path.stat().st_size}
    assert seen[-1] == ("done", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    assert service()


def test_an_interrupted_rebuild_runs_again_on_start(make_client, database_url) -> None:
    url = database_url("depersonalise")
    client, fake = make_client(url)
    load_demo(client)
    push(client, fake, [event(i + 1, f"k{i}", 380100, 394100) for i in range(5)])
    fake.gate.clear()
    client.post(
        "/v1/geographies/demo?code_field=code",
        content=json.dumps(demo_layer(columns=1, rows=1, size_metres=9000)),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )
    assert client.get("/v1/geographies", headers=admin()).json()["rebuild"]["state"] == "running"
    client.close()  # the process stops mid-rebuild
    fake.gate.set()
    again, _ = make_client(url, fake)
    assert wait_rebuild(again)["state"] == "complete"
    body = again.get(
        "/v1/datasets/police-crime/aggregates?geography=demo&from=2024-01-01&to=2024-01-31",
        headers=reader(),
    ).json()
    assert [c["count"] for c in body["cells"]] == [5]


def test_one_layer_is_shown_with_its_areas_and_as_geojson(make_client) -> None:
    client, _ = make_client()
    load_demo(client)
    shown = client.get("/v1/geographies/demo", headers=token()).json()
    assert shown["areas"] == 36 and shown["area_list"][0]["code"] == "DEMO0001"
    geo = client.get("/v1/geographies/demo?format=geojson", headers=token()).json()
    assert len(geo["features"]) == 36 and geo["features"][0]["geometry"]["type"] == "Polygon"
    assert client.get("/v1/geographies/nope", headers=token()).status_code == 404


def test_a_point_on_a_shared_edge_goes_to_the_first_area_like_a_first_match_sjoin() -> None:
    import numpy as np

    layer = read_layer(json.dumps(demo_layer()).encode(), "demo", "code", "name")
    x = np.array([381000.0, 381000.0, 380500.0, np.nan, 0.0])
    y = np.array([394500.0, 395000.0, 394500.0, 1.0, 0.0])
    # The second point is a corner shared by four squares: the lowest index still wins.
    assert layer.codes_for(x, y) == ["DEMO0001", "DEMO0001", "DEMO0001", None, None]


def test_snap_layers_coexist_and_a_new_one_replaces_only_its_name(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    push(client, fake, [event(1, "w", 380500, 394500), event(2, "e", 385500, 399500)])

    def load(name: str, x: int, y: int) -> None:
        rows = f"easting,northing,households\n{x},{y},12\n"
        answer = client.post(
            f"/v1/snap-layers/{name}?k=8",
            content=rows,
            headers={**admin(), "Content-Type": "text/csv"},
        )
        assert answer.status_code == 201, answer.text
        assert wait_rebuild(client)["state"] == "complete"

    def points() -> set[tuple[float, float, str]]:
        records = client.get(
            "/v1/datasets/police-crime/records", headers=reader(level="depersonalised")
        ).json()["records"]
        return {(r["easting"], r["northing"], r["location_method"]) for r in records}

    load("west", 380600, 394600)
    load("east", 385400, 399400)  # another city's points: the west's stay
    assert points() == {(380600, 394600, "snap"), (385400, 399400, "snap")}
    load("west", 380400, 394400)  # the west again: replaces the west only
    assert points() == {(380400, 394400, "snap"), (385400, 399400, "snap")}
    listed = client.get("/v1/snap-layers", headers=admin()).json()["snap_layers"]
    assert sorted((s["name"], s["status"]) for s in listed) == [
        ("east", "active"),
        ("west", "active"),
    ]


def test_snap_layer_from_postcode_centroids_and_a_people_table(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    push(client, fake, [event(1, "p", 380300, 394300)])
    # Code-Point Open: no header; postcode, quality, easting, northing. Two postcodes in
    # DEMO0001, one in DEMO0002, one without a grid reference.
    codepoint = (
        '"M1 1AA",10,380200,394200\n"M1 1AB",10,380400,394400\n'
        '"M1 1AC",10,381500,394500\n"M1 9ZZ",90,0,0\n'
    )
    path = "/v1/snap-layers/pc/postcodes?layer=demo&k=8"
    upload = {**admin(), "Content-Type": "text/csv"}
    early = client.post(path, content=codepoint, headers=upload)
    assert early.status_code == 422 and early.json()["field"] == "layer"
    people = "code,population\nDEMO0001,47.2\nDEMO0002,23.6\n"  # 20 and 10 households
    assert client.post("/v1/populations/demo", content=people, headers=upload).status_code == 201
    built = client.post(path, content=codepoint, headers=upload)
    assert built.status_code == 201, built.text
    report = built.json()
    assert report["postcodes"] == 3 and report["households"] == pytest.approx(30)
    assert report["catchment"]["min"] >= 8
    # ONSPD: a header; terminated postcodes (doterm set) are left out.
    onspd = (
        "pcds,doterm,oseast1m,osnrth1m\nM1 1AA,,380200,394200\nM1 1AB,,380400,394400\n"
        "M1 1AC,,381500,394500\nM1 1ZZ,202001,380300,394300\n"
    )
    again = client.post(path, content=onspd, headers=upload)
    assert again.status_code == 201 and again.json()["postcodes"] == 3
    assert wait_rebuild(client)["state"] == "complete"
    record = client.get(
        "/v1/datasets/police-crime/records", headers=reader(level="depersonalised")
    ).json()["records"][0]
    assert record["location_method"] == "snap" and record["k"] >= 8


def test_progress_and_retry_after_follow_the_rebuild_pace() -> None:
    from datetime import UTC, datetime, timedelta

    from services.depersonalise.replay import layer_progress, retry_after

    start = datetime(2026, 1, 1, tzinfo=UTC)
    running = {"state": "running", "processed": 500, "total": 600, "started_at": start.isoformat()}
    assert layer_progress(running) == 0.833
    assert retry_after(running, start + timedelta(seconds=10)) == "2"  # 100 left at 50/s
    slow = {**running, "processed": 100, "total": 100_000}
    assert retry_after(slow, start + timedelta(seconds=10)) == "60"  # capped
    assert layer_progress({**running, "processed": 900}) == 0.99  # never 1 until served
    assert layer_progress({"state": "complete"}) == 1.0
    assert layer_progress({"state": "failed", "processed": 5, "total": 10}) == 0.0
    assert retry_after({}) == "5"
