"""A demo geography the project makes itself, and the layer loader the ``csp`` command wraps.

``demo_layer()`` is a grid of square areas (codes ``DEMO0001``...) around central Manchester
(SJ 83 97, i.e. easting 383000, northing 397000), in EPSG:27700, clearly not real boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from services.depersonalise.boundary_files import Progress, read_layer

MANCHESTER = (383_000.0, 397_000.0)


def demo_layer(
    centre: tuple[float, float] = MANCHESTER,
    columns: int = 6,
    rows: int = 6,
    size_metres: float = 1000.0,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (EPSG:27700) of ``columns`` × ``rows`` square demo areas."""
    west = centre[0] - columns * size_metres / 2
    south = centre[1] - rows * size_metres / 2
    features = []
    number = 0
    for row in range(rows):
        for column in range(columns):
            number += 1
            x0, y0 = west + column * size_metres, south + row * size_metres
            x1, y1 = x0 + size_metres, y0 + size_metres
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "code": f"DEMO{number:04d}",
                        "name": f"Demo area {number} (not a real boundary)",
                    },
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                    },
                }
            )
    return {
        "type": "FeatureCollection",
        "name": "demo",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::27700"}},
        "features": features,
    }


CONTENT_TYPES = {
    ".geojson": "application/geo+json",
    ".json": "application/geo+json",
    ".gpkg": "application/geopackage+sqlite3",
    ".zip": "application/zip",
}


def load_layer_file(
    path: Path,
    layer: str,
    code_field: str,
    name_field: str | None,
    *,
    url: str,
    api_key: str,
    progress: Progress | None = None,
    timeout: float = 600.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Check a boundary file locally, then upload it to ``POST /v1/geographies/{layer}``.

    ``progress(stage, fraction)`` is called while reading, repairing and uploading, so a command
    can draw a bar. A shapefile is given as its ``.zip``. Problems raise ``ProblemError`` before
    anything is sent; the service's answer (areas, repaired, rebuild) is returned.
    """
    report: Callable[[str, float], None] = progress or (lambda _s, _f: None)
    body = Path(path).read_bytes()
    content_type = CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
    checked = read_layer(
        body,
        layer,
        code_field,
        name_field,
        content_type,
        lambda stage, f: report(f"checking: {stage}", f * 0.5),
    )
    del checked

    def chunks() -> Iterator[bytes]:
        step = 1 << 20
        for start in range(0, len(body), step):
            report("uploading", 0.5 + 0.5 * min(1.0, (start + step) / len(body)))
            yield body[start : start + step]

    params = {"code_field": code_field}
    if name_field:
        params["name_field"] = name_field
    with httpx.Client(timeout=timeout, transport=transport) as client:
        response = client.post(
            f"{url.rstrip('/')}/v1/geographies/{layer}",
            params=params,
            content=chunks(),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": content_type,
                "Content-Length": str(len(body)),
            },
        )
    response.raise_for_status()
    report("done", 1.0)
    answer: dict[str, Any] = response.json()
    return answer
