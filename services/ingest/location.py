"""Where a record happened, in British National Grid metres (EPSG:27700).

Points are checked against the National Grid's extent (0–700 km east, 0–1,300 km north): a point
outside it is not in Great Britain. A point in the sea inside that box is not detected here (no
coastline is loaded); depersonalise counts it as outside every layer. pyproj without the OSTN15
grid file is about 2 m off, which is acceptable for area assignment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import Transformer

GB_EASTING = (0.0, 700_000.0)
GB_NORTHING = (0.0, 1_300_000.0)

COORDINATES, POSTCODE, NONE = "coordinates", "postcode", "none"


@lru_cache(maxsize=1)
def _wgs84_to_bng() -> Transformer:
    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)


def in_gb(easting: float, northing: float) -> bool:
    return (
        GB_EASTING[0] <= easting <= GB_EASTING[1] and GB_NORTHING[0] <= northing <= GB_NORTHING[1]
    )


def to_bng(latitudes: list[float], longitudes: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 degrees → EPSG:27700 metres, one vectorised call per chunk."""
    eastings, northings = _wgs84_to_bng().transform(
        np.asarray(longitudes, dtype=float), np.asarray(latitudes, dtype=float)
    )
    return np.asarray(eastings), np.asarray(northings)


@dataclass
class Located:
    easting: float | None
    northing: float | None
    source: str


@dataclass
class LocationError:
    field: str
    message: str
    outside_gb: bool = False


PostcodeLookup = Callable[[set[str]], dict[str, tuple[float, float]]]

_OUTSIDE = "lies outside Great Britain (British National Grid extent)"


def locate(
    records: list[dict[str, Any]], requirement: str, lookup: PostcodeLookup
) -> list[Located | LocationError]:
    """A location (or the reason there is none usable) for each clean record of a chunk.

    Precedence: easting/northing, then latitude/longitude, then the postcode's centroid.
    """
    results: list[Located | LocationError | None] = [None] * len(records)
    wgs84: list[int] = []
    postcodes: list[int] = []
    for i, record in enumerate(records):
        east, north = record.get("easting"), record.get("northing")
        lat, lon = record.get("latitude"), record.get("longitude")
        if east is not None or north is not None:
            if east is None or north is None:
                missing = "northing" if north is None else "easting"
                results[i] = LocationError(missing, "is needed with the other grid coordinate")
            elif not in_gb(east, north):
                results[i] = LocationError("easting", _OUTSIDE, outside_gb=True)
            else:
                results[i] = Located(east, north, COORDINATES)
        elif lat is not None or lon is not None:
            if lat is None or lon is None:
                missing = "longitude" if lon is None else "latitude"
                results[i] = LocationError(missing, "is needed with the other WGS84 coordinate")
            elif not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
                results[i] = LocationError("latitude", "is not a WGS84 latitude/longitude pair")
            else:
                wgs84.append(i)
        elif record.get("postcode") is not None:
            postcodes.append(i)
        else:
            results[i] = _unlocated(requirement, "location")
    if wgs84:
        eastings, northings = to_bng(
            [records[i]["latitude"] for i in wgs84], [records[i]["longitude"] for i in wgs84]
        )
        inside = (
            np.isfinite(eastings)
            & np.isfinite(northings)
            & (eastings >= GB_EASTING[0])
            & (eastings <= GB_EASTING[1])
            & (northings >= GB_NORTHING[0])
            & (northings <= GB_NORTHING[1])
        )
        points = zip(
            wgs84,
            np.round(eastings, 1).tolist(),
            np.round(northings, 1).tolist(),
            inside.tolist(),
            strict=True,
        )
        for i, east, north, ok in points:
            if ok:
                results[i] = Located(east, north, COORDINATES)
            else:
                results[i] = LocationError("latitude", _OUTSIDE, outside_gb=True)
    if postcodes:
        found = lookup({records[i]["postcode"] for i in postcodes})
        for i in postcodes:
            point = found.get(records[i]["postcode"])
            results[i] = (
                Located(point[0], point[1], POSTCODE)
                if point is not None
                else _unlocated(requirement, "postcode")
            )
    return [r if r is not None else Located(None, None, NONE) for r in results]


def _unlocated(requirement: str, field: str) -> Located | LocationError:
    if requirement != "required":
        return Located(None, None, NONE)
    if field == "postcode":
        return LocationError("postcode", "is not in the loaded postcode layer, and no coordinates")
    return LocationError(
        "location", "is required: easting/northing, latitude/longitude or a postcode"
    )


def parse_postcode_rows(rows: Iterable[list[str]]) -> Iterable[tuple[str, float, float] | None]:
    """Code-Point Open (no header: PC,PQ,EA,NO,...) or ONSPD (header: pcds/pcd, oseast1m,
    osnrth1m, doterm) rows → (postcode, easting, northing); None for a row without a usable point.
    """
    from services.ingest.validation import normalise_postcode

    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return
    lowered = [cell.strip().lower() for cell in first]
    if "oseast1m" in lowered:
        pc = lowered.index("pcds") if "pcds" in lowered else lowered.index("pcd")
        ea, no = lowered.index("oseast1m"), lowered.index("osnrth1m")
        term = lowered.index("doterm") if "doterm" in lowered else None
        body: Iterable[list[str]] = iterator
    else:
        pc, ea, no, term = 0, 2, 3, None
        is_header = lowered and lowered[0] in ("postcode", "pc")
        body = iterator if is_header else _chain(first, iterator)
    for row in body:
        try:
            if term is not None and row[term].strip():
                yield None
                continue
            postcode = normalise_postcode(row[pc])
            east, north = float(row[ea]), float(row[no])
        except (IndexError, ValueError):
            yield None
            continue
        if postcode is None or (east == 0 and north == 0) or not in_gb(east, north):
            yield None
        else:
            yield postcode, east, north


def _chain(first: list[str], rest: Iterable[list[str]]) -> Iterable[list[str]]:
    yield first
    yield from rest
