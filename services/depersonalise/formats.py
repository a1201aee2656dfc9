"""Answer formats: JSON, CSV (spreadsheet formulas neutralised) and GeoJSON (RFC 7946, WGS84)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
from pyproj import Transformer

from services.depersonalise.cell_table import CellTable
from shared.http import CSV_MEDIA, negotiate, neutralise

MEDIA = {
    "json": "application/json",
    "csv": CSV_MEDIA,
    "geojson": "application/geo+json",
}
_TO_WGS84 = Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True)


def choose_format(query_format: str | None, accept: str | None) -> str:
    return negotiate(query_format, accept, [("geo+json", "geojson"), ("text/csv", "csv")], "json")


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return neutralise(json.dumps(value, separators=(",", ":")))
    return neutralise(value)


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def columns_of(rows: list[dict[str, Any]], first: list[str]) -> list[str]:
    seen = list(first)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.append(key)
    return seen


def records_csv(records: list[dict[str, Any]]) -> str:
    """Records as CSV, each layer's area code in its own ``area_<layer>`` column."""
    flat = [
        {
            **{k: v for k, v in r.items() if k != "areas"},
            **{f"area_{a}": c for a, c in r["areas"].items()},
        }
        for r in records
    ]
    return to_csv(flat, columns_of(flat, []))


def points_wgs84(x: list[float | None], y: list[float | None]) -> list[tuple[float, float] | None]:
    xs = np.array([np.nan if v is None else v for v in x], dtype=float)
    ys = np.array([np.nan if v is None else v for v in y], dtype=float)
    lon, lat = _TO_WGS84.transform(xs, ys)
    return [
        None if not np.isfinite(a) else (round(float(a), 6), round(float(b), 6))
        for a, b in zip(np.atleast_1d(lon), np.atleast_1d(lat), strict=True)
    ]


def records_geojson(records: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    coords = points_wgs84([r.get("easting") for r in records], [r.get("northing") for r in records])
    features = [
        {
            "type": "Feature",
            "geometry": None if point is None else {"type": "Point", "coordinates": list(point)},
            "properties": record,
        }
        for record, point in zip(records, coords, strict=True)
    ]
    return {"type": "FeatureCollection", "features": features, **extra}


def aggregates_json(body: dict[str, Any]) -> bytes:
    """An aggregates body as JSONResponse renders it (compact, UTF-8, no NaN), byte for byte; its
    cells written straight from the answer's arrays (cell_table.CellTable.json_pieces), the whole
    body joined once."""
    pieces = ["{"]
    for key, value in body.items():
        if len(pieces) > 1:
            pieces.append(",")
        pieces.append(f"{json.dumps(key, ensure_ascii=False)}:")
        if isinstance(value, CellTable):
            pieces += value.json_pieces()
        else:
            pieces.append(
                json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            )
    pieces.append("}")
    return "".join(pieces).encode("utf-8")


def aggregates_geojson(answer: dict[str, Any], shapes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One feature per area carrying its cells; the release's other members at the top level."""
    by_area: dict[str, dict[str, Any]] = {}
    for cell in answer["cells"]:
        feature = by_area.setdefault(
            cell["area"],
            {
                "type": "Feature",
                "geometry": shapes.get(cell["area"]),
                "properties": {"area": cell["area"], "area_name": cell["area_name"], "cells": []},
            },
        )
        feature["properties"]["cells"].append(
            {k: v for k, v in cell.items() if k not in {"area", "area_name"}}
        )
    top = {k: v for k, v in answer.items() if k != "cells"}
    return {"type": "FeatureCollection", "features": list(by_area.values()), **top}
