"""Anonymous map points: a snap layer whose every catchment holds at least k households.

A catchment is the set of candidate points (postcode centroids, addresses) nearer to a snap point
than to any other, and its size is the sum of their households. Building drops the candidates whose
catchment is too small (their households pass to the neighbours that become nearest) until every
catchment holds ≥ k. Nearest-neighbour search uses scipy's cKDTree: shapely's STRtree is several
times slower for point-to-point nearest queries at this scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from shared.errors import ProblemError


@dataclass
class SnapLayer:
    name: str
    x: np.ndarray
    y: np.ndarray
    catchment: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)
    _tree: cKDTree | None = field(default=None, repr=False)

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(np.column_stack([self.x, self.y]))
        return self._tree

    def __len__(self) -> int:
        return len(self.x)

    def nearest(
        self, x: np.ndarray, y: np.ndarray, within: float = np.inf
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distance to and index of the nearest snap point within ``within`` (inf, -1 if none)."""
        if len(self) == 0:
            return np.full(len(x), np.inf), np.full(len(x), -1)
        # The bound prunes the search: points beyond it fall back anyway.
        distance, index = self.tree.query(
            np.column_stack([x, y]), k=1, distance_upper_bound=within, workers=-1
        )
        index = np.where(np.isfinite(distance), index, -1)
        return distance, index


def combine_snap_layers(layers: list[SnapLayer]) -> SnapLayer | None:
    """Several snap layers (each for its own area of coverage) searched as one: a point snaps to
    the nearest anonymous point of any of them. Its k is the smallest of theirs."""
    if not layers:
        return None
    if len(layers) == 1:
        return layers[0]
    return SnapLayer(
        "+".join(layer.name for layer in layers),
        np.concatenate([layer.x for layer in layers]),
        np.concatenate([layer.y for layer in layers]),
        np.concatenate([layer.catchment for layer in layers]),
        {
            "k": min(int(layer.report.get("k", 0)) for layer in layers),
            "layers": [layer.name for layer in layers],
        },
    )


def build_snap_layer(
    name: str, x: np.ndarray, y: np.ndarray, households: np.ndarray, k: int = 8
) -> SnapLayer:
    """Merge candidates until every catchment holds ≥ k households; report the k distribution."""
    if k < 1:
        raise ProblemError(422, "k must be at least 1.", slug="invalid-k", field="k")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    households = np.asarray(households, dtype=float)
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(households) & (households >= 0)
    if not good.all():
        raise ProblemError(
            422,
            f"{int((~good).sum())} candidate rows lack coordinates or a household count >= 0.",
            slug="invalid-candidates",
            field="body",
        )
    total = households.sum()
    if total < k:
        raise ProblemError(
            422,
            f"The candidates hold {total:g} households in all, fewer than k = {k}.",
            slug="too-few-households",
            field="body",
        )
    candidates = np.column_stack([x, y])
    alive = np.flatnonzero(households > 0)
    rounds = 0
    while True:
        rounds += 1
        tree = cKDTree(candidates[alive])
        _, owner = tree.query(candidates, k=1)
        catchment = np.bincount(owner, weights=households, minlength=len(alive))
        small = catchment < k
        if not small.any():
            break
        # Drop only local minima (smaller than their nearest surviving neighbour), so two small
        # neighbours are not both dropped when removing one is enough.
        _neighbour_dist, neighbour = tree.query(candidates[alive], k=2)
        other = neighbour[:, 1]
        ties = (catchment < catchment[other]) | (
            (catchment == catchment[other]) & (np.arange(len(alive)) < other)
        )
        drop = small & ties
        if not drop.any():
            drop = small & (catchment == catchment[small].min())
        alive = alive[~drop]
    report = {
        "candidates": len(x),
        "points": len(alive),
        "k": k,
        "rounds": rounds,
        "households": float(total),
        "catchment": _distribution(catchment),
    }
    return SnapLayer(name, x[alive], y[alive], catchment, report)


def _distribution(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    quantiles = np.percentile(values, [5, 50, 95])
    return {
        "min": float(values.min()),
        "p5": float(quantiles[0]),
        "median": float(quantiles[1]),
        "p95": float(quantiles[2]),
        "max": float(values.max()),
    }


def read_candidates(body: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate points from CSV ``easting,northing,households`` (header required)."""
    import io

    try:
        frame = pd.read_csv(io.BytesIO(body))
    except Exception as exc:
        raise ProblemError(
            422, "The candidate CSV could not be parsed.", slug="invalid-csv", field="body"
        ) from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    for column in ("easting", "northing", "households"):
        if column not in frame.columns:
            raise ProblemError(
                422,
                f"The candidate CSV has no column {column!r}.",
                slug="missing-column",
                field=column,
            )
    values = frame[["easting", "northing", "households"]].apply(pd.to_numeric, errors="coerce")
    return (
        values["easting"].to_numpy(float),
        values["northing"].to_numpy(float),
        values["households"].to_numpy(float),
    )


PERSONS_PER_HOUSEHOLD = 2.36  # England and Wales 2021 mean household size


def postcode_centroids(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Live postcode centroids (BNG) from a Code-Point Open CSV (no header: postcode, quality,
    easting, northing, ...) or an ONS Postcode Directory CSV (header: pcds or pcd, oseast1m,
    osnrth1m; terminated postcodes, with a ``doterm``, left out)."""
    import io

    head = body[:200].lower()
    try:
        if b"oseast1m" in head:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
            frame.columns = [str(c).strip().lower() for c in frame.columns]
            if "doterm" in frame.columns:
                frame = frame[frame["doterm"].str.strip() == ""]
            east, north = frame["oseast1m"], frame["osnrth1m"]
        else:
            frame = pd.read_csv(io.BytesIO(body), header=None, dtype=str, keep_default_na=False)
            east, north = frame[2], frame[3]
    except Exception as exc:
        raise ProblemError(
            422,
            "Expected a Code-Point Open or ONS Postcode Directory CSV.",
            slug="invalid-csv",
            field="body",
        ) from exc
    x = pd.to_numeric(east, errors="coerce").to_numpy(float)
    y = pd.to_numeric(north, errors="coerce").to_numpy(float)
    # Postcodes without a grid reference carry 0 or nothing in both layouts.
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[keep], y[keep]


def spread_households(
    x: np.ndarray,
    y: np.ndarray,
    layer: Any,
    people: dict[str, float],
    persons_per_household: float = PERSONS_PER_HOUSEHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postcodes inside ``layer`` with households: each area's people spread evenly over its
    postcodes, divided by the household size (1 when the table counts households)."""
    index = np.asarray(layer.assign(x, y))
    inside = index >= 0
    x, y, index = x[inside], y[inside], index[inside]
    per_area = np.bincount(index, minlength=len(layer.codes))
    totals = np.array([people.get(str(code), 0.0) for code in layer.codes], dtype=float)
    households = totals[index] / persons_per_household / per_area[index]
    return x, y, households


def postcode_candidates(
    postcode_csv: Path,
    lsoa_layer: Any,
    population_csv: Path,
    persons_per_household: float = PERSONS_PER_HOUSEHOLD,
) -> pd.DataFrame:
    """Postcode centroids with households estimated from the census population of their LSOA
    (household residents, from the census table's "Lives in a household" column)."""
    x, y = postcode_centroids(postcode_csv.read_bytes())
    population = pd.read_csv(population_csv)
    code_col = next(c for c in population.columns if c.strip().lower() == "geography code")
    household_col = next(c for c in population.columns if "lives in a household" in c.lower())
    residents = dict(
        zip(population[code_col], population[household_col].astype(float), strict=True)
    )
    x, y, households = spread_households(x, y, lsoa_layer, residents, persons_per_household)
    return pd.DataFrame({"easting": x, "northing": y, "households": households})


def grid_centre(x: np.ndarray, y: np.ndarray, metres: int) -> tuple[np.ndarray, np.ndarray]:
    """The centre of the British National Grid cell of the given size that holds each point."""
    return (np.floor(x / metres) + 0.5) * metres, (np.floor(y / metres) + 0.5) * metres
