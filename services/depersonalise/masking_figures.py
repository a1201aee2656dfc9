"""The masking figures of depersonalised records: the displacement histogram (5-metre bands),
its quantiles, and the disclosure report of smallest and median k, displacement and the share
of records without a location. Plain functions over plain data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DISPLACEMENT_BIN_METRES = 5


def displacement_histogram(distances: np.ndarray) -> dict[str, int]:
    """Counts by 5-metre band, keyed by the band's lower edge."""
    if len(distances) == 0:
        return {}
    bins = (np.asarray(distances) // DISPLACEMENT_BIN_METRES).astype(np.int64)
    values, counts = np.unique(bins, return_counts=True)
    return {
        str(int(v) * DISPLACEMENT_BIN_METRES): int(c) for v, c in zip(values, counts, strict=True)
    }


def merge_histograms(histograms: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for histogram in histograms:
        for edge, count in histogram.items():
            merged[edge] = merged.get(edge, 0) + int(count)
    return merged


def histogram_quantile(histogram: dict[str, int], q: float) -> float | None:
    """The quantile, as the middle of its 5-metre band."""
    if not histogram:
        return None
    edges = sorted((int(e), c) for e, c in histogram.items())
    total = sum(c for _, c in edges)
    target = q * total
    running = 0
    for edge, count in edges:
        running += count
        if running >= target:
            return edge + DISPLACEMENT_BIN_METRES / 2
    return edges[-1][0] + DISPLACEMENT_BIN_METRES / 2


def disclosure_report(
    ks: list[float], displacement: dict[str, int], records: int, without_location: int
) -> dict[str, Any]:
    k_min, k_median = (min(ks), float(np.median(ks))) if ks else (None, None)
    return figures_report(k_min, k_median, displacement, records, without_location)


def figures_report(
    k_min: float | None,
    k_median: float | None,
    displacement: dict[str, int],
    records: int,
    without_location: int,
) -> dict[str, Any]:
    """The records' disclosure figures from their smallest and median k, counted in SQL."""
    return {
        "records": records,
        # An integer, rounded down: never overstated.
        "k_min": math.floor(k_min) if k_min is not None else None,
        "k_median": k_median,
        "displacement_median_m": histogram_quantile(displacement, 0.5),
        "displacement_p95_m": histogram_quantile(displacement, 0.95),
        "share_without_location": round(without_location / records, 4) if records else None,
    }
