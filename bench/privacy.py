"""Record-level privacy on real Manchester data: codes agree with published points, households
behind every published (point, area) pair, and spatial k-anonymity against a donut mask.

Data (skipped when absent): Manchester LSOAs, Greater Manchester burglaries (police.uk), Code-Point
Open postcodes and the census 2021 household residents per LSOA, all under ``../shared/data``.
Households per postcode are each LSOA's household residents spread over its postcodes / 2.36.

Figures (each against a baseline computed in the same run):
- ``privacy_codes_disagreeing_with_published_point``: share of published records whose LSOA
  code is not the LSOA of their published point; baseline: codes of the precise point (before).
- ``privacy_min_households_behind_point_and_area``: the fewest households in any published
  (snap point, area) pair — the part of the point's catchment inside the area; baseline: pairs
  with the precise point's area.
- ``privacy_spatial_k_share_vs_donut``: share of records with spatial k >= 8 (residents within
  the displacement disc around the published point, as MaskMyPy defines k), against a donut
  mask whose displacements have the hub's median, random directions, in the same run.

Run: ``.venv/bin/python -m bench.privacy``
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyproj import Transformer
from scipy.spatial import cKDTree

from bench.results import record
from services.depersonalise.boundary_files import read_layer, zipped_shapefile
from services.depersonalise.service import mask_records
from services.depersonalise.snapping import (
    PERSONS_PER_HOUSEHOLD,
    build_snap_layer,
    postcode_candidates,
)
from shared.catalogue import load_catalogue

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LSOA = DATA / "boundaries" / "manchester_lsoa21.shp"
BURGLARY = DATA / "police_uk" / "greater_manchester" / "gmp_burglary_2016-02_to_2019-01.csv"
POSTCODES = DATA / "postcodes" / "codepoint_open_2014" / "m.csv"
POPULATION = DATA / "population" / "census2021_ts001_lsoa.csv"
K = 8


def pair_households(points: np.ndarray, layer: Any, cand: pd.DataFrame, from_point: bool) -> float:
    """Fewest households behind any published (snap point, area code) pair: the candidates whose
    record would be published with that pair — nearest that point, and coded by the point's area
    (``from_point``, as now) or by their own area (as before)."""
    _, owner = cKDTree(points).query(cand[["easting", "northing"]].to_numpy())
    if from_point:
        area = np.asarray(layer.assign(points[:, 0], points[:, 1]))[owner]
    else:
        area = np.asarray(layer.assign(cand["easting"].to_numpy(), cand["northing"].to_numpy()))
    held = (
        pd.DataFrame({"owner": owner, "area": area, "h": cand["households"].to_numpy()})
        .query("area >= 0 and h > 0")
        .groupby(["owner", "area"])["h"]
        .sum()
    )
    return float(held.min())


def spatial_k(
    px: np.ndarray, py: np.ndarray, radius: np.ndarray, tree: cKDTree, residents: np.ndarray
) -> np.ndarray:
    """Residents within each published point's displacement disc."""
    found = tree.query_ball_point(np.column_stack([px, py]), r=radius)
    return np.array([residents[i].sum() for i in found])


def main() -> int:
    if not all(p.exists() for p in (LSOA, BURGLARY, POSTCODES, POPULATION)):
        print(f"bench.privacy: open data under {DATA} is absent; skipped")
        return 0
    layer = read_layer(zipped_shapefile(LSOA), "lsoa21", "lsoa21cd", "lsoa21nm")
    cand = postcode_candidates(POSTCODES, layer, POPULATION)
    snap = build_snap_layer("postcodes", cand["easting"], cand["northing"], cand["households"], K)
    raw = pd.read_csv(BURGLARY)
    to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    x, y = to_bng.transform(raw["Longitude"].to_numpy(), raw["Latitude"].to_numpy())
    x, y = np.asarray(x), np.asarray(y)
    inside = np.asarray(layer.assign(x, y)) >= 0
    x, y = x[inside], y[inside]
    records = [{"occurred_at": "2018-01-01", "category": "Burglary"} for _ in range(len(x))]
    dataset = load_catalogue()["police-crime"]
    run = mask_records(dataset, records, x, y, {"lsoa21": layer}, snap)
    gx = np.array([r.x if r.x is not None else np.nan for r in run.records])
    gy = np.array([r.y if r.y is not None else np.nan for r in run.records])
    shown = np.isfinite(gx)
    gx, gy, x, y = gx[shown], gy[shown], x[shown], y[shown]
    masked = [r for r in run.records if r.x is not None]
    at_point = [layer.codes[i] if i >= 0 else None for i in layer.assign(gx, gy)]
    now = [m.point_areas.get("lsoa21") for m in masked]
    before = [m.areas.get("lsoa21") for m in masked]
    disagree_now = float(np.mean([a != b for a, b in zip(now, at_point, strict=True)]))
    disagree_before = float(np.mean([a != b for a, b in zip(before, at_point, strict=True)]))
    record(
        "privacy_codes_disagreeing_with_published_point",
        disagree_now,
        "share",
        baseline=disagree_before,
        higher_is_better=False,
        target=None,
        records=len(masked),
        note="target 0; the baseline is the codes of the precise point",
    )
    points = np.column_stack([snap.x, snap.y])
    fewest_now = pair_households(points, layer, cand, from_point=True)
    fewest_before = pair_households(points, layer, cand, from_point=False)
    record(
        "privacy_min_households_behind_point_and_area",
        fewest_now,
        "households",
        baseline=fewest_before,
        target=None,
        k=K,
        note=f"target >= k = {K}; the baseline pairs the point with the precise point's area",
    )
    tree = cKDTree(cand[["easting", "northing"]].to_numpy())
    residents = cand["households"].to_numpy() * PERSONS_PER_HOUSEHOLD
    moved = np.hypot(gx - x, gy - y)
    median = float(np.median(moved))
    hub_k = spatial_k(gx, gy, moved, tree, residents)
    rng = np.random.default_rng(12)
    # A donut of the same median displacement: distances uniform in [median/2, 3*median/2].
    distance = rng.uniform(median / 2, 3 * median / 2, len(x))
    angle = rng.uniform(0, 2 * np.pi, len(x))
    dx, dy = x + distance * np.cos(angle), y + distance * np.sin(angle)
    donut_k = spatial_k(dx, dy, distance, tree, residents)
    hub_share, donut_share = float(np.mean(hub_k >= K)), float(np.mean(donut_k >= K))
    record(
        "privacy_spatial_k_share_vs_donut",
        hub_share,
        "share of records with k >= 8",
        baseline=donut_share,
        target=1.0,
        median_displacement_m=round(median, 1),
        donut_median_displacement_m=round(float(np.median(distance)), 1),
        records=len(x),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
