"""Geography layers: assigning points to areas, layers derived from others, which layers nest in
which, and their polygons as stored and as sent. Boundary files are read in ``boundary_files``.

Everything is in British National Grid (EPSG:27700). Layers live in memory as a shapely STRtree
per layer, so assigning a batch of points is one vectorised query per layer.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from shared.errors import ProblemError

BNG = "EPSG:27700"


@dataclass
class Layer:
    """One loaded geography layer: area codes, names and polygons, with a spatial index."""

    name: str
    codes: np.ndarray
    names: np.ndarray
    geoms: np.ndarray
    source_crs: str = BNG
    repaired: int = 0
    _tree: shapely.STRtree | None = field(default=None, repr=False)

    @property
    def tree(self) -> shapely.STRtree:
        if self._tree is None:
            self._tree = shapely.STRtree(self.geoms)
        return self._tree

    def __len__(self) -> int:
        return len(self.codes)

    def assign(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the area each point falls in (-1 outside); on a shared edge, the first area."""
        result = np.full(len(x), -1, dtype=np.int64)
        valid = np.isfinite(x) & np.isfinite(y)
        if not valid.any() or len(self) == 0:
            return result
        positions = np.flatnonzero(valid)
        points = _bulk_points(x[valid], y[valid])
        point_idx, area_idx = self.tree.query(points, predicate="intersects")
        if len(point_idx) == 0:
            return result
        hits = np.bincount(point_idx, minlength=len(positions))
        single = hits[point_idx] == 1
        result[positions[point_idx[single]]] = area_idx[single]
        if not single.all():
            # Several hits only on shared boundaries: keep the lowest area index, deterministically.
            shared_points, shared_areas = point_idx[~single], area_idx[~single]
            order = np.lexsort((shared_areas, shared_points))
            shared_points, shared_areas = shared_points[order], shared_areas[order]
            first = np.ones(len(shared_points), dtype=bool)
            first[1:] = shared_points[1:] != shared_points[:-1]
            result[positions[shared_points[first]]] = shared_areas[first]
        return result

    def codes_for(self, x: np.ndarray, y: np.ndarray) -> list[str | None]:
        index = self.assign(x, y)
        return [None if i < 0 else str(self.codes[i]) for i in index]

    def area_names(self) -> dict[str, str]:
        return dict(zip(self.codes.tolist(), self.names.tolist(), strict=True))


def _bulk_points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Point geometries made with the cyclic GC paused: a million points hold no cycles, and
    collections triggered by their allocation would otherwise cost several times the work."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return np.asarray(shapely.points(x, y))
    finally:
        if was_enabled:
            gc.enable()


def polygonal_part(geom: Any) -> Any:
    """A geometry's polygonal part (empty when it has none)."""
    if geom is None or geom.geom_type in {"Polygon", "MultiPolygon"}:
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in {"Polygon", "MultiPolygon"}]
        return shapely.union_all(parts) if parts else shapely.Polygon()
    return shapely.Polygon()


def layer_from_wkb(name: str, rows: Sequence[tuple[str, str, bytes]], source_crs: str) -> Layer:
    codes = np.array([r[0] for r in rows], dtype=object)
    names = np.array([r[1] for r in rows], dtype=object)
    geoms = shapely.from_wkb([r[2] for r in rows])
    return Layer(name, codes, names, np.asarray(geoms, dtype=object), source_crs)


def layer_to_wkb(layer: Layer) -> list[tuple[str, str, bytes]]:
    blobs = shapely.to_wkb(layer.geoms)
    return [
        (str(c), str(n), bytes(b)) for c, n, b in zip(layer.codes, layer.names, blobs, strict=True)
    ]


def derive_layer(
    child: Layer, name: str, code_from: dict[str, Any], name_from: dict[str, Any] | None
) -> Layer:
    """A parent layer: the child's areas dissolved on a code mapping.

    ``code_from`` is ``{"lookup": {child: parent}}`` or ``{"source": "code"|"name", "start": i,
    "end": j}`` (a Python slice of the child's code or name). ``name_from`` has the same forms and
    maps to the parent's name; without it the parent's name is its code.
    """
    parents = _map_codes(child, code_from, "code_from")
    unmapped = [str(c) for c, p in zip(child.codes, parents, strict=True) if not p]
    if unmapped:
        raise ProblemError(
            422,
            f"{len(unmapped)} areas of {child.name} have no parent code; nothing was derived.",
            slug="unmapped-areas",
            field="code_from",
            errors=[{"code": c, "message": "no parent code"} for c in unmapped[:100]],
        )
    parent_names = _map_codes(child, name_from, "name_from") if name_from else list(parents)
    frame = gpd.GeoDataFrame(
        {"code": parents, "name": parent_names}, geometry=list(child.geoms), crs=BNG
    )
    dissolved = frame.dissolve(by="code", aggfunc="first", as_index=False)
    geoms = np.asarray(shapely.make_valid(dissolved.geometry.values), dtype=object)
    return Layer(
        name,
        dissolved["code"].to_numpy(dtype=object),
        dissolved["name"].astype(str).to_numpy(dtype=object),
        np.array([polygonal_part(g) for g in geoms], dtype=object),
        BNG,
    )


def _map_codes(child: Layer, spec: dict[str, Any], param: str) -> list[str]:
    if "lookup" in spec:
        lookup = spec["lookup"]
        if not isinstance(lookup, dict):
            raise ProblemError(422, "lookup must be an object.", slug="invalid-derive", field=param)
        return [str(lookup.get(str(c), "")) for c in child.codes]
    source = spec.get("source", "code")
    if source not in {"code", "name"}:
        raise ProblemError(
            422, "source must be 'code' or 'name'.", slug="invalid-derive", field=param
        )
    values = child.codes if source == "code" else child.names
    start, end = spec.get("start"), spec.get("end")
    if not all(v is None or isinstance(v, int) for v in (start, end)):
        raise ProblemError(
            422, "start and end must be integers.", slug="invalid-derive", field=param
        )
    return [str(v)[start:end].strip() for v in values]


def wire_features(layer: Layer, tolerance_metres: float) -> dict[str, dict[str, Any]]:
    """Each area's polygon simplified for the wire and in WGS84 (RFC 7946), by code."""
    simplified = shapely.simplify(layer.geoms, tolerance_metres, preserve_topology=True)
    wgs84 = gpd.GeoSeries(simplified, crs=BNG).to_crs("EPSG:4326")
    rounded = shapely.set_precision(wgs84.values, 1e-6)
    return {
        str(code): json.loads(shapely.to_geojson(geom))
        for code, geom in zip(layer.codes, rounded, strict=True)
    }


NEST_TOLERANCE = 0.005  # share of an area that may lie outside its parent (boundary slivers)


def parent_map(
    child: Layer, parent: Layer, tolerance: float = NEST_TOLERANCE
) -> dict[str, str] | None:
    """Each area of ``child`` with the area of ``parent`` it lies in, when ``child`` nests in
    ``parent``: every child area lies inside one parent area up to ``tolerance`` of its own area,
    and the child areas cover each parent area up to ``tolerance`` of its area. None otherwise.

    Vectorised: each child's representative point picks its parent; the children a prepared
    parent contains whole need no more, and only the rest (on a boundary) are intersected.
    """
    if len(child) == 0 or len(parent) == 0 or len(child) < len(parent):
        return None
    points = shapely.point_on_surface(child.geoms)
    hit_point, hit_parent = parent.tree.query(points, predicate="intersects")
    chosen = np.full(len(child), -1, dtype=np.int64)
    chosen[hit_point[::-1]] = hit_parent[::-1]  # the first parent on a shared edge
    if (chosen < 0).any():
        return None
    parents = parent.geoms[chosen]
    shapely.prepare(parent.geoms)
    whole = shapely.within(child.geoms, parents)
    child_area = shapely.area(child.geoms)
    inside = child_area.copy()
    edge = np.flatnonzero(~whole)
    if edge.size:
        inside[edge] = shapely.area(shapely.intersection(child.geoms[edge], parents[edge]))
    if (inside < (1 - tolerance) * child_area).any():
        return None
    covered = np.bincount(chosen, weights=inside, minlength=len(parent))
    if (covered < (1 - tolerance) * shapely.area(parent.geoms)).any():
        return None
    return dict(zip(child.codes.tolist(), parent.codes[chosen].tolist(), strict=True))


def families(
    layers: dict[str, Layer], nested: dict[tuple[str, str], dict[str, str]]
) -> dict[str, str]:
    """Each layer's family base: the finest layer nested in it (most areas; ties by name)."""
    return {
        name: min(
            (child for child, parent in nested if parent == name),
            key=lambda child: (-len(layers[child]), child),
        )
        for name in layers
    }
