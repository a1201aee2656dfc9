"""Points in the sea inside the National Grid box are refused; coastal and island points are not."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.ingest.location import (
    GB_EASTING,
    GB_NORTHING,
    LAND_MASK,
    Located,
    LocationError,
    locate,
    on_land,
    to_bng,
)
from tests.conftest import REPO, require_data
from tests.deploy.files import read_dockerfile
from tests.ingest.conftest import Client, crime, token

LAND = {
    "Manchester": (53.4808, -2.2426),
    "Nottingham": (52.9548, -1.1581),
    "London, Victoria Embankment": (51.5079, -0.1223),
    "Land's End": (50.0657, -5.7132),
    "Blackpool promenade": (53.8175, -3.0553),
    "St Mary's, Scilly": (49.9140, -6.3110),
    "Anglesey, Llangefni": (53.2560, -4.3110),
    "Isle of Wight, Newport": (50.7010, -1.2883),
    "Dover harbour": (51.1265, 1.3134),
    "Holyhead": (53.3094, -4.6330),
    "Lerwick, Shetland": (60.1546, -1.1450),
}
SEA = {
    "Irish Sea": (54.0, -4.5),
    "North Sea": (55.0, 1.5),
    "English Channel": (50.2, -1.5),
    "Bristol Channel": (51.35, -3.8),
    "Cardigan Bay": (52.4, -4.5),
}


def no_postcodes(wanted: set[str]) -> dict[str, tuple[float, float]]:
    return {}


def grid(lat: float, lon: float) -> dict[str, float]:
    eastings, northings = to_bng([lat], [lon])
    return {"easting": float(eastings[0]), "northing": float(northings[0])}


def both_forms(lat: float, lon: float) -> list[Located | LocationError]:
    return locate([{"latitude": lat, "longitude": lon}, grid(lat, lon)], "optional", no_postcodes)


@pytest.mark.parametrize("place", sorted(LAND))
def test_land_and_coast_are_located(place: str) -> None:
    from_wgs84, from_grid = both_forms(*LAND[place])
    assert isinstance(from_wgs84, Located) and from_wgs84.source == "coordinates"
    assert isinstance(from_grid, Located) and from_grid.source == "coordinates"


@pytest.mark.parametrize("place", sorted(SEA))
def test_sea_inside_the_box_is_a_named_error(place: str) -> None:
    lat, lon = SEA[place]
    assert GB_EASTING[0] <= grid(lat, lon)["easting"] <= GB_EASTING[1]
    assert GB_NORTHING[0] <= grid(lat, lon)["northing"] <= GB_NORTHING[1]
    from_wgs84, from_grid = both_forms(lat, lon)
    assert isinstance(from_wgs84, LocationError) and from_wgs84.field == "latitude"
    assert isinstance(from_grid, LocationError) and from_grid.field == "easting"
    for error in (from_wgs84, from_grid):
        assert "sea" in error.message and error.outside_gb
        assert str(lat) not in error.message and str(lon) not in error.message


def test_outside_the_box_keeps_its_own_reason() -> None:
    (far,) = locate([{"latitude": 40.7, "longitude": -74.0}], "optional", no_postcodes)
    assert isinstance(far, LocationError) and "extent" in far.message


def test_far_edges_of_the_box_do_not_overflow_the_mask() -> None:
    # The south-east corner is inland Normandy: the mask is land, not Great Britain (see README).
    corners = [(0.0, 0.0), (700_000.0, 1_300_000.0), (0.0, 1_300_000.0), (700_000.0, 0.0)]
    found = locate([{"easting": e, "northing": n} for e, n in corners], "optional", no_postcodes)
    assert all(isinstance(r, LocationError) and "sea" in r.message for r in found[:3])
    assert isinstance(found[3], Located)


def test_one_chunk_mixes_land_sea_and_postcodes_in_row_order() -> None:
    records: list[dict[str, Any]] = [
        {"latitude": SEA["North Sea"][0], "longitude": SEA["North Sea"][1]},
        grid(*LAND["Manchester"]),
        {"postcode": "M1 1AD"},
        grid(*SEA["Cardigan Bay"]),
        {"latitude": LAND["Lerwick, Shetland"][0], "longitude": LAND["Lerwick, Shetland"][1]},
    ]
    found = locate(records, "optional", lambda wanted: {"M1 1AD": (383825.0, 398598.0)})
    assert [type(r).__name__ for r in found] == [
        "LocationError",
        "Located",
        "Located",
        "LocationError",
        "Located",
    ]
    assert [getattr(r, "field", None) for r in found] == [
        "latitude",
        None,
        None,
        "easting",
        None,
    ]


def test_mask_is_compact_and_committed_beside_its_provenance() -> None:
    assert LAND_MASK.stat().st_size < 300_000
    readme = (LAND_MASK.parent / "README.md").read_text()
    assert "GLOBE" in readme and "build_land_mask" in readme


def dockerignored(relative: str) -> bool:
    """Docker's rule, enough for this file: the last pattern matching the path or a parent wins."""
    parts = relative.split("/")
    paths = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        if any(fnmatch(path, pattern.lstrip("!")) for path in paths):
            ignored = not negated
    return ignored


def test_mask_ships_in_the_ingest_image() -> None:
    relative = LAND_MASK.relative_to(REPO).as_posix()
    copied = {copy.split()[0] for copy in read_dockerfile("ingest").copies}
    assert any(relative.startswith(source) for source in copied if source.endswith("/"))
    assert not dockerignored(relative)


def _police_uk_points() -> Iterator[tuple[float, float]]:
    gmp = require_data("police_uk", "greater_manchester", "gmp_burglary_2016-02_to_2019-01.csv")
    with gmp.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield float(row["Latitude"]), float(row["Longitude"])
    for kind in ("burglary", "robbery"):
        path = require_data("police_uk", "nottingham", f"nottingham_{kind}_2022.csv.gz")
        with gzip.open(path, "rt", newline="") as handle:
            for row in csv.DictReader(handle):
                yield float(row["latitude"]), float(row["longitude"])


@pytest.mark.realdata
def test_every_police_uk_point_is_on_land() -> None:
    points = list(_police_uk_points())
    assert len(points) == 92_666 + 1_795 + 555
    eastings, northings = to_bng([p[0] for p in points], [p[1] for p in points])
    assert int((~on_land(eastings, northings)).sum()) == 0


def _centroids(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        points = [(float(r[2]), float(r[3])) for r in csv.reader(handle)]
    located = np.array([p for p in points if p != (0.0, 0.0)])
    return located[:, 0], located[:, 1]


@pytest.mark.realdata
@pytest.mark.parametrize("area", ["m", "ng"])
def test_every_codepoint_open_centroid_is_on_land(area: str) -> None:
    eastings, northings = _centroids(
        require_data("postcodes", "codepoint_open_2014", f"{area}.csv")
    )
    assert len(eastings) > 25_000
    assert int((~on_land(eastings, northings)).sum()) == 0


async def test_push_names_the_sea_rows_and_keeps_the_rest(client: Client) -> None:
    irish, channel = SEA["Irish Sea"], SEA["English Channel"]
    records = [
        crime("land-1"),
        crime("sea-grid", **grid(*channel)),
        crime("sea-wgs84", easting=None, northing=None, latitude=irish[0], longitude=irish[1]),
        crime("land-2", easting=None, northing=None, latitude=53.47, longitude=-2.23),
    ]
    headers = token("gmp", action="push", dataset="police-crime")
    url = "/v1/datasets/police-crime/records"
    response = await client.post(url, json={"records": records}, headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["received"], body["accepted"], body["rejected"]) == (4, 2, 2)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(2, "easting"), (3, "latitude")]
    assert all("sea" in e["message"] and str(irish[0]) not in e["message"] for e in body["errors"])
    again = await client.post(url, json={"records": [crime("land-3")]}, headers=headers)
    assert again.status_code == 202 and again.json()["accepted"] == 1
    assert (await client.get("/healthz")).status_code == 200
