"""On real open data: Manchester LSOAs, Greater Manchester burglaries, Code-Point postcodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer
from scipy.spatial import cKDTree

from services.depersonalise.boundary_files import read_layer, zipped_shapefile
from services.depersonalise.main import create_app
from services.depersonalise.settings import Settings
from services.depersonalise.snapping import postcode_candidates
from shared.catalogue import load_catalogue
from tests.conftest import (
    create_pg_database,
    drop_pg_database,
    key_settings,
    require_data,
    using_postgres,
)
from tests.depersonalise.conftest import FakeIngest, SyncClient, admin, reader, service

pytestmark = pytest.mark.realdata

LSOA = ("boundaries", "manchester_lsoa21.shp")
BURGLARY = ("police_uk", "greater_manchester", "gmp_burglary_2016-02_to_2019-01.csv")
POSTCODES = ("postcodes", "codepoint_open_2014", "m.csv")
POPULATION = ("population", "census2021_ts001_lsoa.csv")
IDENTIFYING = {"source_ref", "location_description", "postcode", "latitude", "longitude"}


def burglary_points(lsoa: gpd.GeoDataFrame) -> pd.DataFrame:
    raw = pd.read_csv(require_data(*BURGLARY))
    to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    raw["easting"], raw["northing"] = to_bng.transform(
        raw["Longitude"].to_numpy(), raw["Latitude"].to_numpy()
    )
    minx, miny, maxx, maxy = lsoa.total_bounds
    # Manchester and a 2 km margin: some points fall outside the layer, as in real feeds.
    box = raw["easting"].between(minx - 2000, maxx + 2000) & raw["northing"].between(
        miny - 2000, maxy + 2000
    )
    return raw[box].reset_index(drop=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    shp = require_data(*LSOA)
    lsoa = gpd.read_file(shp)
    points = burglary_points(lsoa)
    url = (
        create_pg_database("depersonalise")
        if using_postgres()
        else f"sqlite:///{tmp_path_factory.mktemp('dep') / 'depersonalise.db'}"
    )
    settings = Settings(database_url=url, **key_settings("depersonalise"))
    fake = FakeIngest()
    import httpx

    app = create_app(settings, ingest_transport=httpx.MockTransport(fake.handle))
    client = SyncClient(app)
    try:
        loaded = client.post(
            "/v1/geographies/lsoa21?code_field=lsoa21cd&name_field=lsoa21nm",
            content=zipped_shapefile(shp),
            headers={**admin(), "Content-Type": "application/zip"},
        )
        assert loaded.status_code == 202, loaded.text
        layer = read_layer(zipped_shapefile(shp), "lsoa21", "lsoa21cd", "lsoa21nm")
        candidates = postcode_candidates(require_data(*POSTCODES), layer, require_data(*POPULATION))
        snap = client.post(
            "/v1/snap-layers/postcodes?k=8",
            content=candidates.to_csv(index=False),
            headers={**admin(), "Content-Type": "text/csv"},
        )
        assert snap.status_code == 201, snap.text
        events = [
            {
                "event_id": i + 1,
                "op": "upsert",
                "dataset": "police-crime",
                "provider": "gmp",
                "record_key": f"{i:08x}",
                "revision": 1,
                "location_source": "coordinates",
                "easting": float(row.easting),
                "northing": float(row.northing),
                "record": {
                    "occurred_at": f"{row.Month}-01",
                    "category": row._2,
                    "postcode": "M14 5AB",
                    "location_description": "outside number 12",
                },
            }
            for i, row in enumerate(points.itertuples())
        ]
        for start in range(0, len(events), 5000):
            answer = client.post(
                "/internal/events", json={"events": events[start : start + 5000]}, headers=service()
            )
            assert answer.status_code == 200
            assert answer.json()["depersonalised"] == len(events[start : start + 5000])
        yield {
            "client": client,
            "lsoa": lsoa,
            "points": points,
            "candidates": candidates,
            "snap_report": snap.json(),
        }
    finally:
        client.close()
        if using_postgres():
            drop_pg_database(url)


def sjoin_codes(lsoa: gpd.GeoDataFrame, points: pd.DataFrame) -> pd.Series:
    """The LSOA of each point by an independent geopandas sjoin (first polygon on an edge)."""
    frame = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(points["easting"], points["northing"]), crs="EPSG:27700"
    )
    joined = gpd.sjoin(frame, lsoa[["lsoa21cd", "geometry"]], how="left", predicate="intersects")
    joined = joined.sort_values("index_right").groupby(level=0).first()
    return joined["lsoa21cd"].reindex(frame.index)


def all_records(client: SyncClient) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "limit=5000" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(
            f"/v1/datasets/police-crime/records?{query}", headers=reader(level="depersonalised")
        ).json()
        records += page["records"]
        cursor = page["next_cursor"]
        if not cursor:
            return records


def test_every_point_gets_the_lsoa_an_independent_sjoin_gives(world: dict[str, Any]) -> None:
    expected = sjoin_codes(world["lsoa"], world["points"])
    layer = read_layer(zipped_shapefile(require_data(*LSOA)), "lsoa21", "lsoa21cd", "lsoa21nm")
    ours = layer.codes_for(
        world["points"]["easting"].to_numpy(), world["points"]["northing"].to_numpy()
    )
    assert [c if c is not None else None for c in ours] == [
        None if pd.isna(c) else c for c in expected
    ]
    inside = int(expected.notna().sum())
    assert 23_000 < inside < len(expected)
    # Through the service: each record carries the LSOA of its *published* point (DESIGN
    # "Record-level areas"), so the point and the code never narrow each other.
    records = [r for r in all_records(world["client"]) if r.get("easting") is not None]
    at_point = layer.codes_for(
        np.array([r["easting"] for r in records]), np.array([r["northing"] for r in records])
    )
    disagree = sum(r["areas"]["lsoa21"] != c for r, c in zip(records, at_point, strict=True))
    assert disagree == 0 and len(records) > 0.5 * len(expected)


def _table(world: dict[str, Any], query: str) -> dict[str, Any]:
    answer = world["client"].get(
        f"/v1/datasets/police-crime/aggregates?geography=lsoa21&{query}", headers=reader()
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_years_are_made_of_their_months_and_totals_only_shown_when_nothing_is_hidden(
    world: dict[str, Any],
) -> None:
    inside = int(sjoin_codes(world["lsoa"], world["points"]).notna().sum())
    years = _table(world, "period=year")
    months = _table(world, "period=month")
    assert years["disclosure"]["cells"] == 295 * 4 == len(years["cells"])
    hidden = [c for c in years["cells"] if c["count"] is None]
    assert len(hidden) == years["disclosure"]["suppressed"] > 0
    assert all(c["suppressed"] is True for c in hidden)
    # A suppressed cell somewhere: no total that would give it away.
    assert years["disclosure"]["records"] is None
    assert years["disclosure"]["records_outside_layer"] is None
    month_of: dict[tuple[str, str], list[int | None]] = {}
    for cell in months["cells"]:
        month_of.setdefault((cell["area"], cell["period"][:4]), []).append(cell["count"])
    for cell in years["cells"]:
        parts = month_of[(cell["area"], cell["period"])]
        if None in parts:
            assert cell["count"] is None  # a year never holds a suppressed month
        else:
            assert cell["count"] == sum(parts)
    shown = sum(c["count"] for c in years["cells"] if c["count"] is not None)
    assert 0 < shown <= inside
    published = [c["count"] for c in months["cells"] if c["count"] is not None]
    assert not [n for n in published if 1 <= n < 5]
    assert months["disclosure"]["min_published"] >= 5
    assert months["disclosure"]["suppressed"] > 100


def test_every_snapped_point_has_a_catchment_of_at_least_k(world: dict[str, Any]) -> None:
    report = world["snap_report"]
    assert report["points"] < report["candidates"]
    assert report["catchment"]["min"] >= 8
    records = all_records(world["client"])
    snapped = [r for r in records if r["location_method"] == "snap"]
    # Exactly the records within the dataset's reach (2 km) of a snap point are snapped.
    reach = load_catalogue()["police-crime"].generalisation.max_snap_metres
    layer_points = world["client"].app.state.depersonalise.registry.snap
    precise = world["points"][["easting", "northing"]].to_numpy(float)
    distance, _ = cKDTree(np.column_stack([layer_points.x, layer_points.y])).query(precise)
    assert len(snapped) == int((distance <= reach).sum()) > 0.5 * len(records)
    published = np.unique(np.array([[r["easting"], r["northing"]] for r in snapped]), axis=0)
    # Independently: give every candidate (with its households) to its nearest snap point of the
    # whole layer, and sum the households each published point gathers.
    snap = world["client"].app.state.depersonalise.registry.snap
    snap_points = np.column_stack([snap.x, snap.y])
    candidates = world["candidates"]
    _, owner = cKDTree(snap_points).query(candidates[["easting", "northing"]].to_numpy())
    households = np.bincount(owner, weights=candidates["households"], minlength=len(snap_points))
    lookup = {tuple(p): h for p, h in zip(snap_points.tolist(), households, strict=True)}
    assert min(lookup[tuple(p)] for p in published.tolist()) >= 8
    assert min(r["k"] for r in snapped) >= 8
    page = (
        world["client"]
        .get("/v1/datasets/police-crime/records?limit=1", headers=reader(level="depersonalised"))
        .json()
    )
    assert page["disclosure"]["k_min"] >= 8
    assert (
        0 < page["disclosure"]["displacement_median_m"] < page["disclosure"]["displacement_p95_m"]
    )


def test_no_identifying_field_leaves_in_any_format(world: dict[str, Any]) -> None:
    client = world["client"]
    dataset = load_catalogue()["police-crime"]
    banned = {
        f.name for f in dataset.fields if f.classification in {"identifier", "free-text", "address"}
    }
    assert banned >= {"source_ref", "location_description", "postcode"}
    headers = reader(level="depersonalised")
    as_json = client.get("/v1/datasets/police-crime/records?limit=200", headers=headers).json()
    keys = {k for r in as_json["records"] for k in r}
    assert not keys & banned and not keys & {"latitude", "longitude"}
    for fmt in ("csv", "geojson"):
        text = client.get(
            f"/v1/datasets/police-crime/records?limit=200&format={fmt}", headers=headers
        ).text
        assert "outside number 12" not in text and "M14 5AB" not in text
        assert "location_description" not in text and "source_ref" not in text
    assert as_json["records"][0]["postcode_outward"] == "M14"
    assert json.dumps(as_json).count("M14 5AB") == 0


def test_nottingham_wards_in_wgs84_load_and_assign_correctly(world: dict[str, Any]) -> None:
    path = require_data("boundaries", "nottingham_wards22.gpkg")
    answer = world["client"].post(
        "/v1/geographies/nottingham-wards?code_field=ward_code&name_field=ward_name",
        content=path.read_bytes(),
        headers={**admin(), "Content-Type": "application/geopackage+sqlite3"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["areas"] == 20
    assert "4326" in answer.json()["source_crs"]
    wards = gpd.read_file(path)
    layer = read_layer(path.read_bytes(), "nottingham-wards", "ward_code", "ward_name")
    inner = wards.to_crs("EPSG:27700").representative_point()
    assert layer.codes_for(inner.x.to_numpy(), inner.y.to_numpy()) == wards["ward_code"].tolist()
    assert 440_000 < layer.geoms[0].centroid.x < 470_000
