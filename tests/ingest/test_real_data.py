"""The real police.uk files and Code-Point Open centroids through the public push routes."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import require_data
from tests.ingest.conftest import Client, drain, token

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
PUSH = "/v1/datasets/police-crime/records"
HEADER = ["source_ref", "occurred_at", "category", "latitude", "longitude", "location_description"]


def as_police_crime(rows: Iterable[dict[str, str]], prefix: str, crime_type: str | None) -> bytes:
    """police.uk columns → the police-crime schema: source_ref made up, occurred_at from Month."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for number, row in enumerate(rows):
        month = (row.get("Month") or row["month"])[:7]
        writer.writerow(
            [
                f"{prefix}-{number}",
                f"{month}-01",
                row.get("Crime.type") or crime_type,
                row.get("Latitude") or row["latitude"],
                row.get("Longitude") or row["longitude"],
                row.get("location", ""),
            ]
        )
    return out.getvalue().encode()


async def push_csv(client: Client, body: bytes, dataset: str = "police-crime") -> dict:
    response = await client.post(
        f"/v1/datasets/{dataset}/records",
        content=body,
        headers={**token("gmp"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_manchester_and_nottingham_police_uk_files(client: Client, receiver: object) -> None:
    path = require_data("police_uk", "greater_manchester", "gmp_burglary_2016-02_to_2019-01.csv")
    with path.open(newline="") as handle:
        answer = await push_csv(client, as_police_crime(csv.DictReader(handle), "gmp", None))
    assert answer["received"] == 92_666
    assert answer["accepted"] == 92_666 and answer["errors"] == []
    for kind in ("burglary", "robbery"):
        notts = require_data("police_uk", "nottingham", f"nottingham_{kind}_2022.csv.gz")
        with gzip.open(notts, "rt", newline="") as handle:
            rows = list(csv.DictReader(handle))
        answer = await push_csv(client, as_police_crime(rows, f"notts-{kind}", kind.title()))
        assert answer["accepted"] == len(rows) > 100
    quality = await client.get(
        "/v1/datasets/police-crime/quality", params={"period": "year"}, headers=token("gmp")
    )
    periods = {p["period"]: p for p in quality.json()["periods"]}
    assert set(periods) == {"2016", "2017", "2018", "2019", "2022"}
    assert all(p["geocoded"]["none"] == 0 and p["late"] == p["records"] for p in periods.values())
    assert await drain(client) == 92_666 + 2_350


def centroids(path: Path, limit: int) -> list[str]:
    with path.open(newline="") as handle:
        return [row[0] for _, row in zip(range(limit), csv.reader(handle), strict=False)]


async def test_codepoint_open_layer_geocodes_postcodes(client: Client) -> None:
    admin = {**token("ops", ["admin"]), "Content-Type": "text/csv"}
    loaded = 0
    for area in ("m", "ng"):
        path = require_data("postcodes", "codepoint_open_2014", f"{area}.csv")
        response = await client.post("/v1/postcodes", content=path.read_bytes(), headers=admin)
        assert response.status_code == 200, response.text
        loaded += response.json()["loaded"]
    assert loaded > 55_000
    assert (await client.get("/v1/postcodes", headers=token("gmp"))).json()["postcodes"] == loaded
    sample = centroids(require_data("postcodes", "codepoint_open_2014", "ng.csv"), 500)
    lines = ["source_ref,occurred_at,category,postcode"]
    lines += [f"n{i},2024-05-01,Noise,{pc.replace(' ', '').lower()}" for i, pc in enumerate(sample)]
    answer = await push_csv(client, "\n".join(lines).encode(), "council-asb")
    assert answer["accepted"] == 500
    quality = await client.get("/v1/datasets/council-asb/quality", headers=token("gmp"))
    (period,) = quality.json()["periods"]
    assert period["geocoded"]["postcode"] >= 495
