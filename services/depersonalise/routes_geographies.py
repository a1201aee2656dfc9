"""Routes of the geography: boundary layers (load, derive, show, status, rebuild), snap layers
and the population tables of layers. Operators load; any caller lists."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from services.depersonalise import replay
from services.depersonalise.boundary_files import read_layer
from services.depersonalise.deps import (
    CatalogueDep,
    EngineDep,
    RegistryDep,
    SettingsDep,
    StateDep,
    WriterReadDep,
    app_state,
    body_of,
    get_settings,
)
from services.depersonalise.formats import MEDIA, choose_format
from services.depersonalise.generations import live_records
from services.depersonalise.geography import derive_layer, parent_map
from services.depersonalise.layer_registry import save_layer, save_snap_layer
from services.depersonalise.layers import (
    check_k,
    check_name,
    geography_listing,
    layer_summary,
    wire_shapes,
)
from services.depersonalise.models import DeriveRequest
from services.depersonalise.populations import population, save_population
from services.depersonalise.record_reads import records_without_area
from services.depersonalise.replay import layer_progress, retry_after
from services.depersonalise.snapping import (
    PERSONS_PER_HOUSEHOLD,
    build_snap_layer,
    postcode_centroids,
    read_candidates,
    spread_households,
)
from services.depersonalise.uploads import read_population
from shared.db import in_read_transaction
from shared.deps import AdminDep, ClaimsDep
from shared.errors import ProblemError

router = APIRouter(prefix="/v1", tags=["depersonalise"])


async def trigger_rebuild(request: Request) -> dict[str, Any]:
    """Start a replay into the next generation (restarting one in progress)."""
    state = app_state(request.app)
    served = state.registry.generation
    held = await asyncio.to_thread(in_read_transaction, state.engine, live_records, served)
    nothing_derived = held == 0
    task = await replay.restart(state, get_settings(request))
    if nothing_derived:
        # No record to replay: the new layers are active when this answer leaves.
        return await task
    done, _ = await asyncio.wait({task}, timeout=0.5)
    return task.result() if done else {"state": "running"}


@router.get("/geographies")
def list_geographies(
    registry: RegistryDep, conn: WriterReadDep, claims: ClaimsDep
) -> dict[str, Any]:
    listing = geography_listing(registry, claims.is_admin)
    if claims.is_admin:
        listing["records_outside_all_layers"] = records_without_area(conn, registry.generation)
    return listing


@router.get("/geographies/{layer}/status")
def geography_status(layer: str, registry: RegistryDep, _claims: ClaimsDep) -> JSONResponse:
    """Where the latest load of a layer stands: ``pending`` while it is built, ``active`` once
    served; what a client polls after the 202 of a load (its ``Location``)."""
    if layer in registry.pending:
        status = "pending"
    elif layer in registry.active:
        status = "active"
    else:
        raise ProblemError(404, f"No layer {layer!r}.", slug="unknown-layer", field="layer")
    progress = 1.0 if status == "active" else layer_progress(registry.rebuild)
    headers = {} if status == "active" else {"Retry-After": retry_after(registry.rebuild)}
    body = {"name": layer, "status": status, "progress": progress, "rebuild": registry.rebuild}
    return JSONResponse(jsonable_encoder(body), headers=headers)


@router.get("/geographies/{layer}")
def show_geography(
    request: Request,
    layer: str,
    registry: RegistryDep,
    settings: SettingsDep,
    state: StateDep,
    _claims: ClaimsDep,
    format: str | None = None,
) -> Response:
    """One active layer: its summary and areas; as GeoJSON, the simplified polygons too."""
    found = registry.active.get(layer)
    if found is None:
        raise ProblemError(404, f"No active layer {layer!r}.", slug="unknown-layer", field="layer")
    summary = {"name": layer, **layer_summary(registry.meta.get(layer, {}))}
    if choose_format(format, request.headers.get("accept")) == "geojson":
        shapes = wire_shapes(
            state.wire_cache,
            layer,
            found,
            settings.wire_simplify_metres,
            registry.version,
        )
        features = [
            {
                "type": "Feature",
                "geometry": shapes[code],
                "properties": {"code": code, "name": name},
            }
            for code, name in zip(found.codes.tolist(), found.names.tolist(), strict=True)
        ]
        return JSONResponse(
            jsonable_encoder({"type": "FeatureCollection", "features": features, **summary}),
            media_type=MEDIA["geojson"],
        )
    areas = [
        {"code": code, "name": name}
        for code, name in zip(found.codes.tolist(), found.names.tolist(), strict=True)
    ]
    return JSONResponse(jsonable_encoder({**summary, "areas": len(areas), "area_list": areas}))


@router.post("/geographies/rebuild", status_code=202)
async def retry_rebuild(request: Request, _admin: AdminDep) -> dict[str, Any]:
    return {"rebuild": await trigger_rebuild(request)}


@router.post("/geographies/{layer}", status_code=202)
async def load_geography(
    request: Request,
    layer: str,
    code_field: Annotated[str, Query(min_length=1)],
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
    registry: RegistryDep,
    name_field: str | None = None,
    parent: str | None = None,
) -> JSONResponse:
    check_name(layer)
    claimed = registry.building_layers().get(parent) if parent is not None else None
    if parent is not None and claimed is None:
        raise ProblemError(
            422, f"unknown layer family {parent!r}.", slug="unknown-layer-family", field="parent"
        )
    body = await body_of(request, settings.max_upload_bytes, settings.max_geojson_vertices)
    parsed = await asyncio.to_thread(
        read_layer, body, layer, code_field, name_field, request.headers.get("content-type")
    )
    if claimed is not None and await asyncio.to_thread(parent_map, parsed, claimed) is None:
        raise ProblemError(
            422,
            f"{layer} does not nest in {parent}: an area lies across two of its areas or "
            "outside them, or does not cover them.",
            slug="not-nested",
            field="parent",
        )
    await asyncio.to_thread(save_layer, engine, parsed, code_field, name_field)
    rebuild = await trigger_rebuild(request)
    served = rebuild.get("state") == "complete"
    answer = {
        "layer": layer,
        "areas": len(parsed),
        "repaired": parsed.repaired,
        "source_crs": parsed.source_crs,
        "status": "active" if served else "pending",
        "progress": 1.0 if served else layer_progress(rebuild),
        "rebuild": rebuild,
    }
    return JSONResponse(
        jsonable_encoder(answer),
        status_code=202,
        headers={"Location": f"/v1/geographies/{layer}/status"},
    )


@router.post("/geographies/{layer}/derive", status_code=201)
async def derive_geography(
    request: Request,
    layer: str,
    body: DeriveRequest,
    _admin: AdminDep,
    engine: EngineDep,
    registry: RegistryDep,
) -> dict[str, Any]:
    check_name(layer)
    child = registry.building_layers().get(body.from_layer)
    if child is None:
        raise ProblemError(
            404, f"No layer {body.from_layer!r} is loaded.", slug="unknown-layer", field="from"
        )
    parent = await asyncio.to_thread(derive_layer, child, layer, body.code_from, body.name_from)
    await asyncio.to_thread(save_layer, engine, parent, "code", "name", body.from_layer)
    return {
        "layer": layer,
        "areas": len(parent),
        "derived_from": body.from_layer,
        "rebuild": await trigger_rebuild(request),
    }


@router.post("/snap-layers/{name}", status_code=201)
async def load_snap_layer(
    request: Request,
    name: str,
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
    catalogue: CatalogueDep,
    k: Annotated[int, Query(ge=1, le=1000)] = 8,
) -> dict[str, Any]:
    check_name(name)
    check_k(k, catalogue)
    body = await body_of(request, settings.max_upload_bytes)
    x, y, households = read_candidates(body)
    snap = await asyncio.to_thread(build_snap_layer, name, x, y, households, k)
    await asyncio.to_thread(save_snap_layer, engine, snap)
    return {"name": name, **snap.report, "rebuild": await trigger_rebuild(request)}


@router.post("/snap-layers/{name}/postcodes", status_code=201)
async def load_snap_layer_from_postcodes(
    request: Request,
    name: str,
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
    registry: RegistryDep,  # before the held connection: its reload takes one of its own
    conn: WriterReadDep,
    catalogue: CatalogueDep,
    layer: str,
    k: Annotated[int, Query(ge=1, le=1000)] = 8,
    persons_per_household: Annotated[float, Query(gt=0, le=20)] = PERSONS_PER_HOUSEHOLD,
) -> dict[str, Any]:
    """A snap layer from postcode centroids (Code-Point Open or ONSPD CSV as the body) and the
    people of ``layer``'s areas (its population table; ``persons_per_household=1`` when that
    table counts households)."""
    check_name(name)
    check_k(k, catalogue)
    areas = registry.active.get(layer)
    people = population(conn, layer) if areas is not None else None
    if areas is None or people is None:
        raise ProblemError(
            422,
            f"Load layer {layer!r} and its population table (POST /v1/populations/{layer}) first.",
            slug="no-household-estimate",
            field="layer",
        )
    body = await body_of(request, settings.max_upload_bytes)
    x, y = postcode_centroids(body)
    x, y, households = spread_households(x, y, areas, people, persons_per_household)
    snap = await asyncio.to_thread(build_snap_layer, name, x, y, households, k)
    snap.report["postcodes"] = len(x)
    await asyncio.to_thread(save_snap_layer, engine, snap)
    return {"name": name, **snap.report, "rebuild": await trigger_rebuild(request)}


@router.get("/snap-layers")
def list_snap_layers(registry: RegistryDep, _claims: ClaimsDep) -> dict[str, Any]:
    return {"snap_layers": registry.snap_meta}


@router.post("/populations/{layer}", status_code=201)
async def load_population(
    request: Request,
    layer: str,
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
    registry: RegistryDep,
    code_column: str = "code",
    population_column: str = "population",
) -> dict[str, Any]:
    known = registry.building_layers().get(layer)
    if known is None:
        raise ProblemError(
            404, f"No layer {layer!r} is loaded.", slug="unknown-layer", field="layer"
        )
    body = await body_of(request, settings.max_upload_bytes)
    table = read_population(body, code_column, population_column)
    codes = set(known.codes.tolist())
    matched = {c: v for c, v in table.items() if c in codes}
    await asyncio.to_thread(save_population, engine, layer, matched)
    return {
        "layer": layer,
        "areas": len(codes),
        "matched": len(matched),
        "areas_without_population": len(codes - set(matched)),
        "rows_not_in_layer": len(table) - len(matched),
    }
