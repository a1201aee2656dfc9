"""Reading an uploaded boundary file (GeoJSON, GeoPackage or zipped shapefile) into a BNG layer:
bounded (members, sizes, tables, vertices), reprojected, repaired; every problem is a 422 naming
the field, and nothing is loaded when any feature cannot be used."""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from services.depersonalise.geography import BNG, Layer, polygonal_part
from shared.errors import ProblemError

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
        repaired[invalid] = [polygonal_part(g) for g in fixed]
    empty = shapely.is_empty(repaired) | shapely.is_missing(repaired)
    polygonal = np.array(
        [g is not None and g.geom_type in {"Polygon", "MultiPolygon"} for g in repaired]
    )
    return repaired, empty | ~polygonal, int(invalid.sum())


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
    frame = _frame_of(body, fmt)
    progress("reprojecting", 0.3)
    _check_frame(frame, code_field, name_field)
    frame, source_crs = _to_bng(frame, fmt)
    codes = frame[code_field].astype(str).str.strip().to_numpy()
    missing_code = pd.isna(frame[code_field]).to_numpy() | (codes == "")
    names = frame[name_field].astype(str).to_numpy() if name_field else codes.copy()
    progress("repairing", 0.6)
    geoms, unusable, repaired = _repair(np.asarray(frame.geometry.values, dtype=object))
    _refuse_unusable(codes, missing_code, unusable, code_field)
    progress("indexing", 0.9)
    layer = Layer(name, codes.astype(object), names.astype(object), geoms, source_crs, repaired)
    _ = layer.tree
    progress("done", 1.0)
    return layer


def _frame_of(body: bytes, fmt: str) -> gpd.GeoDataFrame:
    try:
        return _read_frame(body, fmt)
    except ProblemError:
        raise
    except Exception as exc:
        raise ProblemError(
            422,
            f"The {fmt} file could not be read ({type(exc).__name__}).",
            slug="unreadable-geography",
            field="body",
        ) from exc


def _check_frame(frame: gpd.GeoDataFrame, code_field: str, name_field: str | None) -> None:
    """The fields asked for exist, and the layer holds features, not too many vertices."""
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


def _refuse_unusable(
    codes: np.ndarray, missing_code: np.ndarray, unusable: np.ndarray, code_field: str
) -> None:
    """A 422 listing every feature without a code, usable geometry or a code of its own."""
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


def zipped_shapefile(shp: Path) -> bytes:
    """A shapefile's parts (.shp, .shx, .dbf, .prj) as the zip archive a layer upload takes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for suffix in (".shp", ".shx", ".dbf", ".prj"):
            archive.write(shp.with_suffix(suffix), f"layer/{shp.stem}{suffix}")
    return buffer.getvalue()
