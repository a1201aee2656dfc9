"""The depersonalise app in-process with two nested square layers, for attacks on its answers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from shapely.geometry import shape

from services.depersonalise.demo import MANCHESTER
from services.depersonalise.main import create_app
from services.depersonalise.settings import Settings
from tests.conftest import create_pg_database, drop_pg_database, key_settings, using_postgres
from tests.depersonalise.conftest import FakeIngest, SyncClient, admin, token, wait_rebuild
from tests.disclosure.attacker import OUTSIDE, Structure, nesting_from_geometries

FINE, PARENT = "sq-fine", "sq-parent"
SIZE = 1000.0
COLUMNS, ROWS = 3, 2  # six fine squares; each row of three is one parent
WEST, SOUTH = MANCHESTER[0] - COLUMNS * SIZE / 2, MANCHESTER[1] - ROWS * SIZE / 2
OUTSIDE_POINT = (360500.0, 410500.0)  # in Great Britain, outside both layers
YEAR = 2024


def _square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def _collection(name: str, features: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "name": name,
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::27700"}},
        "features": [
            {"type": "Feature", "properties": {"code": code, "name": code}, "geometry": geometry}
            for code, geometry in features
        ],
    }


def fine_layer() -> dict[str, Any]:
    return _collection(
        FINE,
        [
            (
                f"F{row * COLUMNS + column + 1}",
                _square(
                    WEST + column * SIZE,
                    SOUTH + row * SIZE,
                    WEST + (column + 1) * SIZE,
                    SOUTH + (row + 1) * SIZE,
                ),
            )
            for row in range(ROWS)
            for column in range(COLUMNS)
        ],
    )


def parent_layer() -> dict[str, Any]:
    return _collection(
        PARENT,
        [
            (
                f"P{row + 1}",
                _square(WEST, SOUTH + row * SIZE, WEST + COLUMNS * SIZE, SOUTH + (row + 1) * SIZE),
            )
            for row in range(ROWS)
        ],
    )


def fine_centre(code: str) -> tuple[float, float]:
    number = int(code[1:]) - 1
    row, column = divmod(number, COLUMNS)
    return WEST + (column + 0.5) * SIZE, SOUTH + (row + 0.5) * SIZE


def shapes(collection: dict[str, Any]) -> dict[str, Any]:
    return {f["properties"]["code"]: shape(f["geometry"]) for f in collection["features"]}


def structure() -> Structure:
    """What a recipient learns of the layers: the parent squares' nesting, from geometry."""
    nested = nesting_from_geometries(shapes(fine_layer()), shapes(parent_layer()))
    return Structure(FINE, {PARENT: nested})


def grant(
    provider: str, purpose: str, fields: list[str] | None = None, start: str = f"{YEAR}-01-01"
) -> dict[str, Any]:
    return {
        "provider": provider,
        "agreement": f"agr-{provider}-{purpose}",
        "version": 1,
        "level": "aggregate",
        "fields": fields,
        "from": start,
        "to": "2030-12-31",
        "purpose": purpose,
    }


def reading(grants: list[dict[str, Any]], dataset: str = "police-crime") -> dict[str, str]:
    """The internal token the gateway forwards for a read under ``grants``."""
    return token(
        sub="council",
        action="read",
        dataset=dataset,
        level="aggregate",
        providers=sorted({g["provider"] for g in grants}),
        agreement=grants[0]["agreement"],
        grants=grants,
    )


def place(code: str, jitter: int) -> tuple[float, float]:
    """A point inside fine area ``code`` (or outside every layer for ``OUTSIDE``)."""
    x, y = OUTSIDE_POINT if code == OUTSIDE else fine_centre(code)
    return x + (jitter % 37) * 7.0, y + (jitter % 29) * 9.0


_numbers = itertools.count(1)


def next_numbers(count: int) -> list[int]:
    """Event ids (and record keys) never used before in this process."""
    return [next(_numbers) for _ in range(count)]


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SyncClient, FakeIngest]]:
    """One app for the module, both layers loaded; each test pushes under its own providers."""
    folder: Path = tmp_path_factory.mktemp("disclosure")
    url = (
        create_pg_database("depersonalise")
        if using_postgres()
        else f"sqlite:///{folder / 'depersonalise.db'}"
    )
    settings = Settings(
        database_url=url,
        replay_page_size=500,
        **cast(dict[str, Any], key_settings("depersonalise")),
    )
    fake = FakeIngest()
    app = create_app(settings, ingest_transport=httpx.MockTransport(fake.handle))
    client = SyncClient(app)
    try:
        for name, layer in ((FINE, fine_layer()), (PARENT, parent_layer())):
            loaded = client.post(
                f"/v1/geographies/{name}?code_field=code&name_field=name",
                content=json.dumps(layer),
                headers={**admin(), "Content-Type": "application/geo+json"},
            )
            assert loaded.status_code == 202, loaded.text
            assert wait_rebuild(client)["state"] == "complete"
        yield client, fake
    finally:
        client.close()
        if using_postgres():
            drop_pg_database(url)
