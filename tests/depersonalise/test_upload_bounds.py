"""Uploads are bounded while they stream and before they are unpacked: body size, zip members,
uncompressed size and ratio, GeoPackage tables, vertices."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely

from services.depersonalise import boundary_files
from services.depersonalise.boundary_files import read_layer
from shared.errors import ProblemError
from tests.depersonalise.conftest import admin, token
from tests.depersonalise.test_geography import BNG, SQUARE, collection


def frame(count: int = 2) -> gpd.GeoDataFrame:
    squares = [shapely.box(i * 10, 0, i * 10 + 10, 10) for i in range(count)]
    return gpd.GeoDataFrame({"code": [f"A{i}" for i in range(count)]}, geometry=squares, crs=BNG)


def shapefile_zip(tmp_path: Path, extra: dict[str, bytes] | None = None) -> bytes:
    frame().to_file(tmp_path / "layer.shp")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for suffix in (".shp", ".shx", ".dbf", ".prj"):
            archive.write(tmp_path / f"layer{suffix}", f"layer{suffix}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def refused(body: bytes) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        read_layer(body, "t", "code")
    assert caught.value.status == 422
    assert caught.value.extra["field"] == "body"
    return caught.value


def test_a_plain_zipped_shapefile_still_loads(tmp_path: Path) -> None:
    assert len(read_layer(shapefile_zip(tmp_path), "t", "code").codes) == 2


def test_a_zip_with_too_many_members_is_refused(tmp_path: Path) -> None:
    extra = {f"readme{n}.txt": b"x" for n in range(boundary_files.MAX_ZIP_MEMBERS)}
    assert "files" in refused(shapefile_zip(tmp_path, extra)).detail


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    bomb = {"layer.cpg": b"\0" * 50_000_000}  # 50 MB of zeros, about 50 KB compressed
    assert "compressed more than" in refused(shapefile_zip(tmp_path, bomb)).detail


def test_a_zip_unpacking_past_the_total_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(boundary_files, "MAX_ZIP_UNCOMPRESSED", 1000)
    assert "unpacks to" in refused(shapefile_zip(tmp_path)).detail


@pytest.mark.slow
def test_a_geopackage_with_too_many_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.gpkg"
    for n in range(boundary_files.MAX_GPKG_TABLES + 1):
        frame().to_file(path, layer=f"t{n}", driver="GPKG")
    assert "tables" in refused(path.read_bytes()).detail


def test_a_layer_with_too_many_vertices_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boundary_files, "MAX_VERTICES", 9)
    assert "vertices" in refused(collection([("A", SQUARE), ("B", SQUARE)], BNG)).detail


def test_a_streamed_body_over_the_limit_is_refused_without_reading_it_all(
    make_client: Callable[..., Any],
) -> None:
    client, _ = make_client(max_depersonalise_bytes=1_000_000)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b" " * 100_000

    answer = client.post(
        "/v1/depersonalise",
        params={"dataset": "police-crime"},
        content=body(),
        headers={
            **token(action="read", dataset="police-crime", level="depersonalised"),
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 413
    assert sent < 20


def test_a_layer_upload_over_the_limit_is_413(make_client: Callable[..., Any]) -> None:
    client, _ = make_client(max_upload_bytes=1000)
    answer = client.post(
        "/v1/geographies/big",
        params={"code_field": "code"},
        content=b"{" + b" " * 5000 + b"}",
        headers={**admin(), "Content-Type": "application/geo+json"},
    )
    assert answer.status_code == 413
