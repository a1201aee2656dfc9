"""Geography layers: reading boundary files, repairing them, and assigning points to areas.

Everything is in British National Grid (EPSG:27700). Layers live in memory as a shapely STRtree
per layer, so assigning a batch of points is one vectorised query per layer.
"""

from __future__ import annotations

import gc
import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from shared.errors import ProblemError

BNG = "EPSG:27700"
Progress = Callable[[str, float], None]

GPKG_MAGIC = b"SQLite format 3\x00"
ZIP_MAGIC = b"PK\x03\x04"
# Bounds on what one boundary upload may make the service do (a national OA layer fits well).
MAX_ZIP_MEMBERS = 16
MAX_ZIP_UNCOMPRESSED = 1_500_000_000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, for members over a megabyte
MAX_GPKG_TABLES = 16
MAX_VERTICES = 50_000_000
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def _no_progress(_stage: str, _fraction: float) -> None:
    return None


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


def detect_format(body: bytes, content_type: str | None = None) -> str:
    """``geojson``, ``gpkg`` or ``shapefile-zip`` from the magic bytes, else the content type."""
    if body.startswith(GPKG_MAGIC):
        return "gpkg"
    if body.startswith(ZIP_MAGIC):
        return "shapefile-zip"
    stripped = body.lstrip()[:1]
    kind = (content_type or "").split(";")[0].strip().lower()
    if stripped == b"{" or kind in {"application/geo+json", "application/json"}:
        return "geojson"
    raise ProblemError(
        415,
        "The body is neither GeoJSON, a GeoPackage nor a zipped shapefile.",
        slug="unsupported-geography-format",
        field="body",
    )


def _read_frame(body: bytes, fmt: str) -> gpd.GeoDataFrame:
    with tempfile.TemporaryDirectory() as folder:
        if fmt == "geojson":
            path = Path(folder) / "layer.geojson"
            path.write_bytes(body)
            return gpd.read_file(path)
        if fmt == "gpkg":
            path = Path(folder) / "layer.gpkg"
            path.write_bytes(body)
            tables = len(pyogrio.list_layers(path))
            if tables > MAX_GPKG_TABLES:
                raise _too_much(f"The GeoPackage holds {tables} tables; at most {MAX_GPKG_TABLES}.")
            return gpd.read_file(path)
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = _checked_members(archive)
            shapefiles = [m.filename for m in members if m.filename.lower().endswith(".shp")]
            if len(shapefiles) != 1:
                raise ProblemError(
                    422,
                    f"The zip must hold exactly one .shp file; it holds {len(shapefiles)}.",
                    slug="invalid-shapefile-zip",
                    field="body",
                )
            # Only the shapefile's own parts, by their sizes as checked above.
            archive.extractall(folder, [m for m in members if m.filename.lower().endswith(
                SHAPEFILE_PARTS)])  # fmt: skip
            return gpd.read_file(Path(folder) / shapefiles[0])


def _checked_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise _too_much(f"The zip holds {len(members)} files; at most {MAX_ZIP_MEMBERS}.")
    total = sum(m.file_size for m in members)
    if total > MAX_ZIP_UNCOMPRESSED:
        raise _too_much(f"The zip unpacks to {total} bytes; at most {MAX_ZIP_UNCOMPRESSED}.")
    for member in members:
        if member.file_size > 1_000_000 and member.file_size > MAX_ZIP_RATIO * max(
            member.compress_size, 1
        ):
            raise _too_much(f"A zip member is compressed more than {MAX_ZIP_RATIO} to 1.")
    return members


def _too_much(detail: str) -> ProblemError:
    return ProblemError(422, detail, slug="upload-too-large", field="body")


def _to_bng(frame: gpd.GeoDataFrame, fmt: str) -> tuple[gpd.GeoDataFrame, str]:
    if frame.crs is None:
        if fmt != "geojson":
            raise ProblemError(
                422, "The file declares no coordinate reference system.", slug="no-crs", field="crs"
            )
        minx, miny, maxx, maxy = frame.total_bounds
        # RFC 7946 GeoJSON is WGS84; old files carrying metres without a crs member are BNG.
        looks_degrees = max(abs(minx), abs(maxx)) <= 180 and max(abs(miny), abs(maxy)) <= 90
        frame = frame.set_crs("EPSG:4326" if looks_degrees else BNG)
    source = CRS.from_user_input(frame.crs)
    label = source.to_string()
    if not source.equals(CRS.from_user_input(BNG)):
        frame = frame.to_crs(BNG)
    return frame, label


def _repair(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """make_valid each invalid geometry and keep its polygonal part; flag what cannot be saved."""
    invalid = ~shapely.is_valid(geoms)
    repaired = geoms.copy()
    if invalid.any():
        fixed = shapely.make_valid(geoms[invalid])
        repaired[invalid] = [_polygonal(g) for g in fixed]
    empty = shapely.is_empty(repaired) | shapely.is_missing(repaired)
    polygonal = np.array(
        [g is not None and g.geom_type in {"Polygon", "MultiPolygon"} for g in repaired]
    )
    return repaired, empty | ~polygonal, int(invalid.sum())


def _polygonal(geom: Any) -> Any:
    if geom is None or geom.geom_type in {"Polygon", "MultiPolygon"}:
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in {"Polygon", "MultiPolygon"}]
        return shapely.union_all(parts) if parts else shapely.Polygon()
    return shapely.Polygon()


def read_layer(
    body: bytes,
    name: str,
    code_field: str,
    name_field: str | None = None,
    content_type: str | None = None,
    progress: Progress = _no_progress,
) -> Layer:
    """Parse a boundary file into a BNG layer; every problem is a 422 naming the field."""
    fmt = detect_format(body, content_type)
    progress("reading", 0.0)
    try:
        frame = _read_frame(body, fmt)
    except ProblemError:
        raise
    except Exception as exc:
        raise ProblemError(
            422,
            f"The {fmt} file could not be read ({type(exc).__name__}).",
            slug="unreadable-geography",
            field="body",
        ) from exc
    progress("reprojecting", 0.3)
    for wanted, param in ((code_field, "code_field"), (name_field, "name_field")):
        if wanted and wanted not in frame.columns:
            raise ProblemError(
                422,
                f"The layer has no field {wanted!r}; its fields are "
                f"{', '.join(c for c in frame.columns if c != 'geometry')}.",
                slug="unknown-layer-field",
                field=param,
            )
    if len(frame) == 0:
        raise ProblemError(422, "The layer holds no features.", slug="empty-layer", field="body")
    vertices = int(shapely.get_num_coordinates(np.asarray(frame.geometry.values)).sum())
    if vertices > MAX_VERTICES:
        raise _too_much(f"The layer has {vertices} vertices; at most {MAX_VERTICES}.")
    frame, source_crs = _to_bng(frame, fmt)
    codes = frame[code_field].astype(str).str.strip().to_numpy()
    missing_code = pd.isna(frame[code_field]).to_numpy() | (codes == "")
    names = frame[name_field].astype(str).to_numpy() if name_field else codes.copy()
    progress("repairing", 0.6)
    geoms, unusable, repaired = _repair(np.asarray(frame.geometry.values, dtype=object))
    problems: list[dict[str, Any]] = []
    for i in np.flatnonzero(missing_code):
        problems.append({"feature": int(i), "field": code_field, "message": "empty area code"})
    for i in np.flatnonzero(unusable & ~missing_code):
        problems.append(
            {"feature": int(i), "code": codes[i], "message": "geometry empty or not polygonal"}
        )
    duplicated = pd.Series(codes).duplicated(keep=False).to_numpy() & ~missing_code
    for code in sorted(set(codes[duplicated])):
        problems.append({"code": code, "field": code_field, "message": "duplicate area code"})
    if problems:
        raise ProblemError(
            422,
            f"{len(problems)} features of the layer cannot be used; nothing was loaded.",
            slug="invalid-geography",
            errors=problems[:100],
            field="body",
        )
    progress("indexing", 0.9)
    layer = Layer(name, codes.astype(object), names.astype(object), geoms, source_crs, repaired)
    _ = layer.tree
    progress("done", 1.0)
    return layer


def zipped_shapefile(shp: Path) -> bytes:
    """A shapefile's parts (.shp, .shx, .dbf, .prj) as the zip archive a layer upload takes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for suffix in (".shp", ".shx", ".dbf", ".prj"):
            archive.write(shp.with_suffix(suffix), f"layer/{shp.stem}{suffix}")
    return buffer.getvalue()


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
        np.array([_polygonal(g) for g in geoms], dtype=object),
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
