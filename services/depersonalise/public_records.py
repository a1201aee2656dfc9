"""What a depersonalised record shows its recipient: the public fields an agreement allows, the
area codes it may carry (its published point's, or only areas big enough), and the BNG points
of records sent to the depersonalisation tool. Plain functions over plain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from services.depersonalise.service import REMOVED, Masked
from services.depersonalise.snapping import PERSONS_PER_HOUSEHOLD
from shared.catalogue import Dataset

LOCATION_FIELDS = {"easting", "northing", "latitude", "longitude"}


def public_field_names(dataset: Dataset) -> set[str]:
    """Names a depersonalised record may show (outward postcodes under their own name)."""
    names = {f.name for f in dataset.fields if f.classification not in REMOVED}
    names |= {
        f"{f.name}_outward"
        for f in dataset.fields
        if f.classification == "address" and f.keep_outward_code
    }
    return names


def allowed_fields(dataset: Dataset, agreed: list[str] | None) -> set[str]:
    """Public fields the caller may see: the agreement's allow-list ∩ the non-identifying fields."""
    public = public_field_names(dataset) | {"occurred_at", "category"}
    if agreed is None:
        return public | LOCATION_FIELDS
    wanted = set(agreed)
    wanted |= {f"{name}_outward" for name in agreed}
    return (public & wanted) | (LOCATION_FIELDS & wanted)


def public_record(
    period: str | None,
    category: str | None,
    attributes: dict[str, Any],
    areas: dict[str, Any],
    point: tuple[float | None, float | None],
    method: str,
    k: float | None,
    allowed: set[str],
) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if "occurred_at" in allowed:
        record["occurred_at"] = period
    if "category" in allowed:
        record["category"] = category
    record.update({k_: v for k_, v in attributes.items() if k_ in allowed})
    if allowed & LOCATION_FIELDS:
        record["easting"], record["northing"] = point
        record["location_method"] = method
        record["k"] = None if k is None else int(k)
    record["areas"] = areas
    return record


def record_areas(
    precise: dict[str, Any],
    at_point: dict[str, Any] | None,
    point_shown: bool,
    k: int,
    residents: Mapping[str, Mapping[str, float] | None],
) -> dict[str, Any]:
    """The codes a record may carry: those of its published point when the point is shown;
    otherwise only codes of areas estimated to hold at least ``k`` households (none where no
    population is loaded for the layer)."""
    if point_shown and at_point:
        return at_point
    kept: dict[str, Any] = {}
    for layer, code in precise.items():
        people = residents.get(layer) or {}
        big_enough = code is not None and people.get(code, 0) / PERSONS_PER_HOUSEHOLD >= k
        kept[layer] = code if big_enough else None
    return kept


def masked_public(
    masked: Masked, allowed: set[str], residents: Mapping[str, Mapping[str, float] | None], k: int
) -> dict[str, Any]:
    shown = bool(allowed & LOCATION_FIELDS) and masked.x is not None
    return public_record(
        masked.period,
        masked.category,
        masked.attributes,
        record_areas(masked.areas, masked.point_areas, shown, k, residents),
        (masked.x, masked.y),
        masked.method,
        masked.k,
        allowed,
    )


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return np.nan
    return number if np.isfinite(number) else np.nan


def points_of(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """BNG points of records given as easting/northing or latitude/longitude (NaN when none)."""
    from pyproj import Transformer

    x = np.array([_number(r.get("easting")) for r in records], dtype=float)
    y = np.array([_number(r.get("northing")) for r in records], dtype=float)
    lat = np.array([_number(r.get("latitude")) for r in records], dtype=float)
    lon = np.array([_number(r.get("longitude")) for r in records], dtype=float)
    need = ~(np.isfinite(x) & np.isfinite(y)) & np.isfinite(lat) & np.isfinite(lon)
    if need.any():
        to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
        x[need], y[need] = to_bng.transform(lon[need], lat[need])
    return x, y
