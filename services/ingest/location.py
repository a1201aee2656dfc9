"""Where a record happened, in British National Grid metres (EPSG:27700).

Points are checked against the National Grid's extent (0–700 km east, 0–1,300 km north), then
against a land mask: a point outside the box, or in the sea inside it, is not in Great Britain and
is a per-row error. pyproj without the OSTN15 grid file is about 2 m off, which is acceptable for
area assignment.

The mask (``reference/gb_land_500m.npz``, ~19 KB) holds one bit per 500 m cell of the box, built
once by ``scripts/build_land_mask.py`` from GLOBE 30-arc-second land/sea data (NOAA, public domain,
via the MIT ``global-land-mask`` package). Land is grown by 1.5 km before saving, because the source
is ~1 km and a crime on a pier, beach or harbour wall must never be refused; only points clearly
offshore are. It is land, not Great Britain: the parts of Ireland, the Isle of Man and northern
France inside the box count as land. Postcode centroids are not checked: they come from the loaded
postcode layer, not from the sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer

GB_EASTING = (0.0, 700_000.0)
GB_NORTHING = (0.0, 1_300_000.0)

COORDINATES, POSTCODE, NONE = "coordinates", "postcode", "none"

LAND_MASK = Path(__file__).resolve().parent / "reference" / "gb_land_500m.npz"
LAND_CELL_METRES = 500


@lru_cache(maxsize=1)
def _wgs84_to_bng() -> Transformer:
    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)


def in_gb(easting: float, northing: float) -> bool:
    return (
        GB_EASTING[0] <= easting <= GB_EASTING[1] and GB_NORTHING[0] <= northing <= GB_NORTHING[1]
    )


@lru_cache(maxsize=1)
def _land() -> np.ndarray:
    """The mask as a (north, east) bool array, ~3.6 MB, read once per process on first use.

    The file's grid is checked against the box so a mask built for another extent or cell size
    fails loudly instead of misplacing every point.
    """
    with np.load(LAND_MASK, allow_pickle=False) as saved:
        rows, cols = (int(n) for n in saved["shape"])
        cell = int(saved["cell_metres"])
        packed = saved["packed"]
    expected = (int(GB_NORTHING[1]) // LAND_CELL_METRES, int(GB_EASTING[1]) // LAND_CELL_METRES)
    if cell != LAND_CELL_METRES or (rows, cols) != expected:
        raise RuntimeError(f"{LAND_MASK.name} is not a {LAND_CELL_METRES} m grid of the GB box")
    return np.unpackbits(packed, count=rows * cols).reshape(rows, cols).view(bool)


def on_land(eastings: np.ndarray, northings: np.ndarray) -> np.ndarray:
    """True for each point whose 500 m cell is land; the points must lie inside the box.

    One fancy-indexing lookup per chunk. The far edges (700 km E, 1,300 km N) belong to the last
    cell, hence the clip.
    """
    land = _land()
    rows, cols = land.shape
    col = np.clip((np.asarray(eastings) // LAND_CELL_METRES).astype(np.intp), 0, cols - 1)
    row = np.clip((np.asarray(northings) // LAND_CELL_METRES).astype(np.intp), 0, rows - 1)
    return land[row, col]


def to_bng(
    latitudes: list[float] | np.ndarray, longitudes: list[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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
_AT_SEA = "lies in the sea, not on land in Great Britain"


@dataclass
class Places:
    """Where each record of a chunk lies, by column; ``errors`` holds the rows with no usable
    location (their coordinates and source mean nothing)."""

    eastings: list[float | None]
    northings: list[float | None]
    sources: list[str]
    errors: dict[int, LocationError]


def locate(
    records: list[dict[str, Any]], requirement: str, lookup: PostcodeLookup
) -> list[Located | LocationError]:
    """A location (or the reason there is none usable) for each clean record of a chunk."""
    places = locate_columns(records, requirement, lookup)
    errors = places.errors
    return [
        errors.get(i) or Located(east, north, source)
        for i, (east, north, source) in enumerate(
            zip(places.eastings, places.northings, places.sources, strict=True)
        )
    ]


def locate_columns(
    records: list[dict[str, Any]], requirement: str, lookup: PostcodeLookup
) -> Places:
    """``locate`` by column.

    Precedence: easting/northing, then latitude/longitude, then the postcode's centroid. Rows
    with coordinates are gathered first and checked against the box and the land mask together,
    so the per-row cost stays a few array operations per chunk.
    """
    count = len(records)
    places = Places([None] * count, [None] * count, [NONE] * count, {})
    if not count:
        return places
    east, north, lat, lon = (
        list(map(dict.get, records, repeat(name)))
        for name in ("easting", "northing", "latitude", "longitude")
    )
    if east.count(None) == count == north.count(None) and None not in lat and None not in lon:
        _locate_all_wgs84(lat, lon, places)
        return places
    grid, wgs84, postcodes = _by_source(records, (east, north, lat, lon), requirement, places)
    if grid:
        _locate_grid([east[i] for i in grid], [north[i] for i in grid], grid, places)
    if wgs84:
        lats = np.asarray([lat[i] for i in wgs84], dtype=float)
        lons = np.asarray([lon[i] for i in wgs84], dtype=float)
        _locate_wgs84(lats, lons, np.asarray(wgs84, dtype=np.intp), places)
    if postcodes:
        _locate_postcodes(records, postcodes, requirement, lookup, places)
    return places


def _locate_all_wgs84(lat: list[Any], lon: list[Any], places: Places) -> None:
    """Every record has latitude/longitude and nothing before them: checked as arrays."""
    lats, lons = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    pair = (lats >= -90.0) & (lats <= 90.0) & (lons >= -180.0) & (lons <= 180.0)
    for i in np.flatnonzero(~pair).tolist():
        places.errors[i] = LocationError("latitude", "is not a WGS84 latitude/longitude pair")
    _locate_wgs84(lats[pair], lons[pair], np.flatnonzero(pair), places)


def _by_source(
    records: list[dict[str, Any]],
    columns: tuple[list[Any], list[Any], list[Any], list[Any]],
    requirement: str,
    places: Places,
) -> tuple[list[int], list[int], list[int]]:
    """The rows to place by grid coordinates, by latitude/longitude and by postcode; a row with
    half a pair, a pair out of range or nothing to go by gets its error now."""
    east, north, lat, lon = columns
    grid: list[int] = []
    wgs84: list[int] = []
    postcodes: list[int] = []
    errors = places.errors
    for i, record in enumerate(records):
        e, n, la, lo = east[i], north[i], lat[i], lon[i]
        if e is not None or n is not None:
            if e is None or n is None:
                missing = "northing" if n is None else "easting"
                errors[i] = LocationError(missing, "is needed with the other grid coordinate")
            elif not in_gb(e, n):
                errors[i] = LocationError("easting", _OUTSIDE, outside_gb=True)
            else:
                grid.append(i)
        elif la is not None or lo is not None:
            if la is None or lo is None:
                missing = "longitude" if lo is None else "latitude"
                errors[i] = LocationError(missing, "is needed with the other WGS84 coordinate")
            elif not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
                errors[i] = LocationError("latitude", "is not a WGS84 latitude/longitude pair")
            else:
                wgs84.append(i)
        elif record.get("postcode") is not None:
            postcodes.append(i)
        else:
            _unlocated(requirement, "location", i, places)
    return grid, wgs84, postcodes


def _locate_postcodes(
    records: list[dict[str, Any]],
    rows: list[int],
    requirement: str,
    lookup: PostcodeLookup,
    places: Places,
) -> None:
    """The postcode centroids of ``rows``, looked up once for the chunk."""
    found = lookup({records[i]["postcode"] for i in rows})
    for i in rows:
        point = found.get(records[i]["postcode"])
        if point is None:
            _unlocated(requirement, "postcode", i, places)
        else:
            places.eastings[i], places.northings[i], places.sources[i] = (*point, POSTCODE)


def _locate_grid(
    eastings: list[Any], northings: list[Any], indices: list[int], places: Places
) -> None:
    """Easting/northing already inside the box: one mask lookup for the whole chunk."""
    land = on_land(np.asarray(eastings, dtype=float), np.asarray(northings, dtype=float))
    for i, east, north, ok in zip(indices, eastings, northings, land.tolist(), strict=True):
        if ok:
            places.eastings[i], places.northings[i], places.sources[i] = east, north, COORDINATES
        else:
            places.errors[i] = LocationError("easting", _AT_SEA, outside_gb=True)


def _locate_wgs84(
    latitudes: np.ndarray, longitudes: np.ndarray, indices: np.ndarray, places: Places
) -> None:
    """Latitude/longitude (a valid pair) at ``indices``: one transform, one box test and one
    mask lookup for the whole chunk."""
    eastings, northings = to_bng(latitudes, longitudes)
    inside = (
        np.isfinite(eastings)
        & np.isfinite(northings)
        & (eastings >= GB_EASTING[0])
        & (eastings <= GB_EASTING[1])
        & (northings >= GB_NORTHING[0])
        & (northings <= GB_NORTHING[1])
    )
    land = np.zeros_like(inside)
    land[inside] = on_land(eastings[inside], northings[inside])
    for i, in_box in zip(indices[~land].tolist(), inside[~land].tolist(), strict=True):
        places.errors[i] = LocationError(
            "latitude", _AT_SEA if in_box else _OUTSIDE, outside_gb=True
        )
    east = np.round(eastings[land], 1).tolist()
    north = np.round(northings[land], 1).tolist()
    kept = indices[land].tolist()
    if len(kept) == len(places.sources):  # the whole chunk: whole columns
        places.eastings, places.northings = east, north
        places.sources = [COORDINATES] * len(kept)
        return
    for i, e, n in zip(kept, east, north, strict=True):
        places.eastings[i], places.northings[i], places.sources[i] = e, n, COORDINATES


def _unlocated(requirement: str, field: str, index: int, places: Places) -> None:
    if requirement != "required":
        return
    if field == "postcode":
        places.errors[index] = LocationError(
            "postcode", "is not in the loaded postcode layer, and no coordinates"
        )
    else:
        places.errors[index] = LocationError(
            "location", "is required: easting/northing, latitude/longitude or a postcode"
        )


def parse_postcode_rows(rows: Iterable[list[str]]) -> Iterable[tuple[str, float, float] | None]:
    """Code-Point Open (no header: PC,PQ,EA,NO,...) or ONSPD (header: pcds/pcd, oseast1m,
    osnrth1m, doterm) rows → (postcode, easting, northing); None for a row without a usable point.
    """
    from shared.validation import normalise_postcode

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
