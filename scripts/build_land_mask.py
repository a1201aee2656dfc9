"""Build ``services/ingest/reference/gb_land_500m.npz``, the land mask ingest checks points against.

Run once, by hand, when the mask has to change; the output is committed and nothing at run time
or in the tests needs this script. Its source, the ``global-land-mask`` package (GLOBE
30-arc-second land/sea data from NOAA, public domain; the package is MIT), loads a ~1 GB global
array on import, so it is kept out of every requirements file. Install it in a scratch venv::

    python3.11 -m venv /tmp/lm && /tmp/lm/bin/pip install global-land-mask numpy pyproj
    /tmp/lm/bin/python scripts/build_land_mask.py

Each 500 m cell of the British National Grid box (0–700 km E, 0–1,300 km N) is sampled at
``SAMPLES_PER_SIDE``² points spread over the cell (so islands narrower than a cell are not
missed); a cell is land if any sample is. The land is then grown by ``DILATE_CELLS`` cells in
every direction (a disc), because the source is ~1 km and a crime on a pier, beach, harbour
wall or promenade must never be refused: only points clearly offshore end up outside the mask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CELL_METRES = 500
EAST_CELLS = 700_000 // CELL_METRES
NORTH_CELLS = 1_300_000 // CELL_METRES
SAMPLES_PER_SIDE = 3
DILATE_CELLS = 3
OUTPUT = (
    Path(__file__).resolve().parent.parent
    / "services"
    / "ingest"
    / "reference"
    / "gb_land_500m.npz"
)


def sample_offsets() -> np.ndarray:
    """Sample positions inside one cell, in metres from its south-west corner."""
    step = CELL_METRES / SAMPLES_PER_SIDE
    return (np.arange(SAMPLES_PER_SIDE) + 0.5) * step


def land_cells() -> np.ndarray:
    """(north, east) bool array: True where any sample of the cell is land in GLOBE.

    Row by row of cells, so the transformed coordinates never hold more than one row at a time
    beside the source array.
    """
    from global_land_mask import globe
    from pyproj import Transformer

    to_wgs84 = Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True)
    offsets = sample_offsets()
    east_points = (np.arange(EAST_CELLS)[:, None] * CELL_METRES + offsets[None, :]).ravel()
    land = np.zeros((NORTH_CELLS, EAST_CELLS), dtype=bool)
    for row in range(NORTH_CELLS):
        for north_offset in offsets:
            northings = np.full(east_points.shape, row * CELL_METRES + north_offset)
            lons, lats = to_wgs84.transform(east_points, northings)
            hits = np.asarray(globe.is_land(np.asarray(lats), np.asarray(lons)), dtype=bool)
            land[row] |= hits.reshape(EAST_CELLS, SAMPLES_PER_SIDE).any(axis=1)
    return land


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow True cells by ``radius`` cells in every direction (a disc, not a square)."""
    padded = np.pad(mask, radius)
    grown = np.zeros_like(mask)
    rows, cols = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                grown |= padded[radius + dy : radius + dy + rows, radius + dx : radius + dx + cols]
    return grown


def save(mask: np.ndarray, path: Path) -> None:
    """Bit-packed and deflated: ~3.6 M cells become tens of kilobytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        packed=np.packbits(mask, axis=None),
        shape=np.array(mask.shape, dtype=np.int64),
        cell_metres=np.array(CELL_METRES, dtype=np.int64),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        land = land_cells()
    except ImportError:
        print(
            "global-land-mask is not installed here; run this script from a scratch venv "
            "(see its docstring).",
            file=sys.stderr,
        )
        return 2
    mask = dilate(land, DILATE_CELLS)
    save(mask, args.output)
    print(
        f"{args.output}: {args.output.stat().st_size} bytes; land cells {int(land.sum())} "
        f"before dilation, {int(mask.sum())} after ({DILATE_CELLS} cells of {CELL_METRES} m)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
