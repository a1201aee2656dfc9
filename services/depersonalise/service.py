"""Depersonalising records: areas, generalised location, cut time, only non-identifying fields.

Plain functions over plain data. The precise point enters here and never leaves: what comes out
is area codes, a generalised point, a period, the kept attributes, and masking figures
(``masking_figures``). What a masked record shows its recipient is ``public_records``.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from services.depersonalise.geography import Layer
from services.depersonalise.masking_figures import disclosure_report, displacement_histogram
from services.depersonalise.snapping import SnapLayer, grid_centre
from shared.catalogue import Dataset
from shared.errors import ProblemError

# PERIODS, coarser_or_equal, next_period, period_count and periods_between live in
# shared/periods.py and stay importable from here, where other modules look for them.
from shared.periods import PERIODS as PERIODS
from shared.periods import coarser_or_equal as coarser_or_equal
from shared.periods import day_of, parse_instant, period_label, period_start
from shared.periods import next_period as next_period
from shared.periods import period_count as period_count
from shared.periods import periods_between as periods_between

REMOVED = {"identifier", "free-text", "address", "location", "special-category"}
BANDING_FILE = Path(__file__).with_name("banding.toml")


@dataclass
class Masked:
    """One depersonalised record."""

    period_start: date | None
    period: str | None
    category: str | None
    attributes: dict[str, Any]
    areas: dict[str, str | None]
    x: float | None
    y: float | None
    method: str
    k: float | None
    # The day itself is never published; a recipient's grants select records by it.
    occurred_on: date | None = None
    # Codes of the published point (empty without one): a point and its codes never narrow
    # each other. ``areas`` (the precise point's) serves counting, and codes that meet k.
    point_areas: dict[str, str | None] = field(default_factory=dict)
    # Never published: the end of the record's window (a cohort member's leaving day) and the
    # special-category values only aggregates count.
    occurred_until: date | None = None
    counted: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskingRun:
    records: list[Masked]
    displacement: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def report(self) -> dict[str, Any]:
        return disclosure_report(
            [r.k for r in self.records if r.k is not None],
            displacement_histogram(self.displacement),
            len(self.records),
            sum(1 for r in self.records if r.x is None),
        )


# --- categories ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _bands() -> list[tuple[re.Pattern[str], str]]:
    with BANDING_FILE.open("rb") as handle:
        raw = tomllib.load(handle)
    return [
        (re.compile("|".join(entry["match"]), re.IGNORECASE), entry["band"])
        for entry in raw.get("band", [])
    ]


def band_category(category: str | None) -> str | None:
    """Sensitive categories (sexual offences, domestic abuse) are published only as their band."""
    if category is None:
        return None
    for pattern, band in _bands():
        if pattern.search(category):
            return band
    return category


# --- records -------------------------------------------------------------------------------


def outward_code(postcode: Any) -> str | None:
    if not isinstance(postcode, str):
        return None
    compact = re.sub(r"\s+", "", postcode.upper())
    if not 5 <= len(compact) <= 7:
        return None
    return compact[:-3]


def kept_attributes(dataset: Dataset, record: dict[str, Any]) -> dict[str, Any]:
    """The fields a depersonalised record may carry, with datetimes cut to the resolution."""
    kept: dict[str, Any] = {}
    for spec in dataset.fields:
        if spec.name not in record or spec.name in {"occurred_at", "category"}:
            continue
        value = record[spec.name]
        if spec.classification == "address" and spec.keep_outward_code:
            code = outward_code(value)
            if code:
                kept[f"{spec.name}_outward"] = code
        elif spec.classification == "datetime":
            moment = parse_instant(value)
            if moment is not None:
                kept[spec.name] = period_label(moment.date(), dataset.time_resolution)
        elif spec.classification not in REMOVED:
            kept[spec.name] = value
    return kept


def mask_records(
    dataset: Dataset,
    records: list[dict[str, Any]],
    x: np.ndarray,
    y: np.ndarray,
    layers: dict[str, Layer],
    snap: SnapLayer | None,
) -> MaskingRun:
    """Depersonalise records whose precise points (BNG, NaN when none) are ``x``, ``y``."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    areas = {name: layer.assign(x, y) for name, layer in layers.items()}
    gx, gy, method, k, displacement = generalise(dataset, x, y, snap)
    published = {name: layer.assign(gx, gy) for name, layer in layers.items()}
    resolution = dataset.time_resolution
    # Per record, plain Python values: indexing numpy arrays one element at a time costs more
    # than the rest of the loop.
    codes = {name: layer.codes.tolist() for name, layer in layers.items()}
    at_point = {name: idx.tolist() for name, idx in areas.items()}
    at_published = {name: idx.tolist() for name, idx in published.items()}
    special = [f.name for f in dataset.fields if f.classification == "special-category"]
    px, py, pk, how = gx.tolist(), gy.tolist(), k.tolist(), method.tolist()
    out = []
    for i, record in enumerate(records):
        moment = parse_instant(record.get("occurred_at"))
        day = moment.date() if moment else None
        out.append(
            Masked(
                period_start=period_start(day, resolution) if day else None,
                period=period_label(day, resolution) if day else None,
                category=band_category(record.get("category")),
                attributes=kept_attributes(dataset, record),
                areas={
                    name: (str(codes[name][idx[i]]) if idx[i] >= 0 else None)
                    for name, idx in at_point.items()
                },
                x=None if math.isnan(px[i]) else px[i],
                y=None if math.isnan(py[i]) else py[i],
                method=str(how[i]),
                k=None if math.isnan(pk[i]) else pk[i],
                occurred_on=day,
                occurred_until=day_of(record.get("occurred_to")),
                counted={name: record[name] for name in special if record.get(name) is not None},
                point_areas={
                    name: (str(codes[name][idx[i]]) if idx[i] >= 0 else None)
                    for name, idx in at_published.items()
                }
                if math.isfinite(px[i])
                else {},
            )
        )
    return MaskingRun(out, displacement[np.isfinite(displacement)])


def generalise(
    dataset: Dataset, x: np.ndarray, y: np.ndarray, snap: SnapLayer | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Published point, method, catchment k and displacement for each point (vectorised)."""
    rule = dataset.generalisation
    n = len(x)
    gx = np.full(n, np.nan)
    gy = np.full(n, np.nan)
    k = np.full(n, np.nan)
    method = np.full(n, "none", dtype=object)
    located = np.isfinite(x) & np.isfinite(y)
    pending = located.copy()
    keeps_k = snap is not None and int(snap.report.get("k", 0)) >= rule.k
    if rule.method == "snap" and snap is not None and keeps_k and len(snap) and pending.any():
        where = np.flatnonzero(pending)
        distance, index = snap.nearest(x[where], y[where], rule.max_snap_metres)
        near = distance <= rule.max_snap_metres
        chosen = where[near]
        gx[chosen] = snap.x[index[near]]
        gy[chosen] = snap.y[index[near]]
        k[chosen] = snap.catchment[index[near]]
        method[chosen] = "snap"
        pending[chosen] = False
    if rule.method == "grid":
        _grid(x, y, pending, rule.grid_metres, gx, gy, method)
    elif rule.method == "area":
        method[pending] = "area"
    elif rule.fallback == "grid":
        _coarsened_grid(x, y, pending, rule.fallback_grid_metres, snap, rule.k, gx, gy, method)
    else:
        method[pending] = "area"
    displacement = np.hypot(gx - x, gy - y)
    return gx, gy, method, k, displacement


# A fallback cell grows (250 m, 500 m, ... 4 km) until the estimate puts k households in it.
MAX_FALLBACK_GRID_METRES = 4000


def _coarsened_grid(
    x: np.ndarray,
    y: np.ndarray,
    pending: np.ndarray,
    metres: int,
    estimate: SnapLayer | None,
    k: int,
    gx: np.ndarray,
    gy: np.ndarray,
    method: np.ndarray,
) -> None:
    """Grid centres for points the snap layer does not reach, each cell doubled until the snap
    layer's household counts (the catchments of its points inside the cell) reach ``k``; the
    location is withheld where no cell up to the largest does, or where no estimate exists."""
    size = metres
    while (
        estimate is not None
        and len(estimate)
        and pending.any()
        and size <= MAX_FALLBACK_GRID_METRES
    ):
        keys, inverse = np.unique(_cell_keys(estimate.x, estimate.y, size), return_inverse=True)
        households = np.bincount(inverse, weights=estimate.catchment, minlength=len(keys))
        where = np.flatnonzero(pending)
        wanted = _cell_keys(x[where], y[where], size)
        slot = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
        chosen = where[(keys[slot] == wanted) & (households[slot] >= k)]
        gx[chosen], gy[chosen] = grid_centre(x[chosen], y[chosen], size)
        method[chosen] = f"grid{size}"
        pending[chosen] = False
        size *= 2
    method[pending] = "none"
    pending[:] = False


def _cell_keys(x: np.ndarray, y: np.ndarray, metres: int) -> np.ndarray:
    # Grid references stay below 2**21 metres, so one int64 holds both cell indices.
    return (np.floor(x / metres).astype(np.int64) << 22) + np.floor(y / metres).astype(np.int64)


def _grid(
    x: np.ndarray,
    y: np.ndarray,
    pending: np.ndarray,
    metres: int,
    gx: np.ndarray,
    gy: np.ndarray,
    method: np.ndarray,
) -> None:
    cx, cy = grid_centre(x[pending], y[pending], metres)
    gx[pending], gy[pending] = cx, cy
    method[pending] = f"grid{metres}"
    pending[:] = False


def dataset_or_404(catalogue: dict[str, Dataset], name: str) -> Dataset:
    dataset = catalogue.get(name)
    if dataset is None:
        raise ProblemError(
            404, f"No dataset {name!r} in the catalogue.", slug="unknown-dataset", field="dataset"
        )
    return dataset
