"""A GeoJSON layer's vertices are counted while it streams: one over the bound is refused before
the reader starts (the slow part), whatever the chunking; one within it loads."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from services.depersonalise.uploads import VertexCount
from shared.errors import ProblemError
from tests.depersonalise.conftest import admin


def polygon(vertices: int, indent: int | None = None) -> bytes:
    step = 2 * math.pi / vertices
    ring = [[383000 + 2000 * math.cos(step * i), 398000 + 2000 * math.sin(step * i)]
            for i in range(vertices)]  # fmt: skip
    ring.append(ring[0])
    layer = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:27700"}},
        "features": [{"type": "Feature", "properties": {"code": "BIG"},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}],
    }  # fmt: skip
    return json.dumps(layer, indent=indent).encode()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("indent", [None, 2])
def test_positions_are_counted_across_chunk_boundaries(chunk: int, indent: int | None) -> None:
    body = polygon(300, indent)
    counter = VertexCount(10_000)
    for start in range(0, len(body), chunk):
        counter.feed(body[start : start + chunk])
    assert counter.count == 301  # the ring closes on its first position
    with pytest.raises(ProblemError) as refused:
        over = VertexCount(300)
        for start in range(0, len(body), chunk):
            over.feed(body[start : start + chunk])
    assert refused.value.status == 422 and refused.value.extra["field"] == "body"


def test_a_geojson_layer_over_the_bound_is_refused_and_one_within_loads(
    make_client: Callable[..., Any],
) -> None:
    client, _ingest = make_client(max_geojson_vertices=2000)
    read: list[int] = []
    body = polygon(5000)

    async def stream() -> Any:
        for start in range(0, len(body), 1000):
            read.append(start)
            yield body[start : start + 1000]

    headers = {**admin(), "Content-Type": "application/geo+json"}
    refused = client.post("/v1/geographies/big?code_field=code", content=stream(), headers=headers)
    assert refused.status_code == 422, refused.text
    assert "2000 vertices" in refused.json()["detail"]
    assert len(read) < len(body) // 1000  # refused before the end of the body
    loaded = client.post(
        "/v1/geographies/fits?code_field=code", content=polygon(1500), headers=headers
    )
    assert loaded.status_code == 202, loaded.text
