"""HTTP routes of the depersonalise service: translate requests to and from the domain code."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import date
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from services.depersonalise import cube, replay, store, tables
from services.depersonalise.aggregates import ALL, RELATIVE_REACH, Rule
from services.depersonalise.deps import (
    CatalogueDep,
    EngineDep,
    ReadEngineDep,
    RegistryDep,
    SettingsDep,
)
from services.depersonalise.formats import (
    MEDIA,
    aggregates_geojson,
    aggregates_json,
    choose_format,
    columns_of,
    records_csv,
    records_geojson,
    to_csv,
)
from services.depersonalise.geography import (
    derive_layer,
    parent_map,
    read_layer,
    wire_features,
)
from services.depersonalise.models import (
    AggregateTable,
    DeriveRequest,
    EventBatch,
    EventsAnswer,
)
from services.depersonalise.reconcile import reconcile
from services.depersonalise.replay import layer_progress, retry_after
from services.depersonalise.service import (
    LOCATION_FIELDS,
    allowed_fields,
    coarser_or_equal,
    dataset_or_404,
    figures_report,
    mask_records,
    masked_public,
    period_count,
    points_of,
    public_record,
    record_areas,
)
from services.depersonalise.snapping import (
    PERSONS_PER_HOUSEHOLD,
    build_snap_layer,
    postcode_centroids,
    read_candidates,
    spread_households,
)
from shared.catalogue import Dataset
from shared.errors import ProblemError
from shared.grants import Slices, slices, slices_of
from shared.http import decode_int_cursor, encode_cursor, require_service
from shared.tokens import RECORD_COUNT, AdminDep, ClaimsDep, InternalClaims
from shared.validation import CompiledDataset, compile_dataset, validate_row

internal = APIRouter(prefix="/internal", tags=["internal"])
router = APIRouter(prefix="/v1", tags=["depersonalise"])
EARLIEST, LATEST = date(1900, 1, 1), date(2199, 12, 31)

Period = Query(pattern="^(week|month|quarter|year)$")


# A GeoJSON position: "[" then a number. Arrays of numbers in properties count too (they cost
# the reader as much).
_POSITION = re.compile(rb"\[\s*[-+0-9.]")


class VertexCount:
    """Positions seen in a GeoJSON body as it streams, refused at the first one over ``limit``:
    parsing GeoJSON text is what makes a large layer slow, so it is refused before it starts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._carry = b""  # a "[" (and spaces) at a chunk's end, whose number comes next

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        self.count += len(_POSITION.findall(data))
        last = data.rfind(b"[")
        tail = data[last:] if last >= 0 else b""
        self._carry = tail if len(tail) < 1024 and not tail[1:].strip() else b""
        if self.count > self.limit:
            raise ProblemError(
                422,
                f"A GeoJSON layer holds at most {self.limit} vertices: load a larger one as a "
                "zipped shapefile or a GeoPackage.",
                slug="upload-too-large",
                field="body",
            )


async def _body(request: Request, limit: int, geojson_vertices: int | None = None) -> bytes:
    """The body, counted against ``limit`` as it streams: refused at the first byte over it (and,
    with ``geojson_vertices``, a GeoJSON body at its first vertex over that)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, f"The body is larger than {limit} bytes.", field="body")
    parts: list[bytes] = []
    size = 0
    vertices: VertexCount | None = None
    undecided = geojson_vertices is not None  # until the first byte that is not a space
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"The body is larger than {limit} bytes.", field="body")
        if undecided and (head := chunk.lstrip()):
            undecided = False
            if head[:1] == b"{" and geojson_vertices is not None:
                vertices = VertexCount(geojson_vertices)
        if vertices is not None:
            vertices.feed(chunk)
        parts.append(chunk)
    body = b"".join(parts)
    if not body:
        raise ProblemError(422, "The body is empty.", slug="empty-body", field="body")
    return body


async def trigger_rebuild(request: Request) -> dict[str, Any]:
    """Start a replay into the next generation (restarting one in progress)."""
    state = request.app.state
    nothing_derived = (
        await asyncio.to_thread(store.live_records, state.engine, state.registry.generation) == 0
    )
    task = await replay.restart(state)
    if nothing_derived:
        # No record to replay: the new layers are active when this answer leaves.
        return await task
    done, _ = await asyncio.wait({task}, timeout=0.5)
    return task.result() if done else {"state": "running"}


# --- ingest → depersonalise -------------------------------------------------------------------


@internal.post("/events")
def receive_events(
    batch: EventBatch,
    claims: ClaimsDep,
    engine: EngineDep,
    registry: RegistryDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
) -> EventsAnswer:
    require_service(claims)
    results, stored = store.apply_events(
        engine, batch.events, catalogue, registry.targets(), settings.record_key_secret()
    )
    return EventsAnswer.model_validate({"results": results, "depersonalised": stored})


# --- geography --------------------------------------------------------------------------------


@router.get("/geographies")
def list_geographies(registry: RegistryDep, engine: EngineDep, claims: ClaimsDep) -> dict[str, Any]:
    layers = []
    for name in sorted(set(registry.active) | set(registry.pending)):
        meta = registry.meta.get(name, {})
        pending = meta.get("pending")
        entry: dict[str, Any] = {
            "name": name,
            "status": "active" if name in registry.active else "pending",
        }
        if name in registry.active:
            entry.update(_layer_summary(meta))
        if pending:
            entry["pending"] = _layer_summary(pending)
            entry["progress"] = layer_progress(registry.rebuild)
        layers.append(entry)
    listing: dict[str, Any] = {
        "layers": layers,
        "snap_layers": registry.snap_meta,
        "rebuild": registry.rebuild,
        "generation": registry.generation,
    }
    if not claims.is_admin:
        # Hub-wide record counts (a rebuild's progress, records outside every layer) are the
        # operators' to see: an agency learns only whether a rebuild runs.
        listing["rebuild"] = {"state": registry.rebuild.get("state")} if registry.rebuild else {}
        return listing
    listing["records_outside_all_layers"] = store.records_without_area(engine, registry.generation)
    return listing


def _layer_summary(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "areas": meta.get("area_count"),
        "source_crs": meta.get("source_crs"),
        "code_field": meta.get("code_field"),
        "name_field": meta.get("name_field"),
        "repaired": meta.get("repaired"),
        "derived_from": meta.get("derived_from"),
        "loaded_at": meta.get("loaded_at"),
    }


LAYER_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


@router.post("/reconcile")
async def reconcile_now(request: Request, _admin: AdminDep) -> dict[str, Any]:
    """Compare raw (ingest) with derived records per dataset x provider now, and repair."""
    return await reconcile(request.app.state)


@router.get("/reconcile")
def last_reconcile(request: Request, _admin: AdminDep) -> dict[str, Any]:
    """The last reconciliation of this replica (scheduled or asked for)."""
    report = request.app.state.reconcile
    if report is None:
        return {"state": "never", "pairs": [], "lag_records": 0}
    return dict(report)


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
    _claims: ClaimsDep,
    format: str | None = None,
) -> Response:
    """One active layer: its summary and areas; as GeoJSON, the simplified polygons too."""
    found = registry.active.get(layer)
    if found is None:
        raise ProblemError(404, f"No active layer {layer!r}.", slug="unknown-layer", field="layer")
    summary = {"name": layer, **_layer_summary(registry.meta.get(layer, {}))}
    if choose_format(format, request.headers.get("accept")) == "geojson":
        shapes = _wire_shapes(request, layer, found, settings.wire_simplify_metres, registry)
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
    _check_name(layer)
    claimed = registry.building_layers().get(parent) if parent is not None else None
    if parent is not None and claimed is None:
        raise ProblemError(
            422, f"unknown layer family {parent!r}.", slug="unknown-layer-family", field="parent"
        )
    body = await _body(request, settings.max_upload_bytes, settings.max_geojson_vertices)
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
    await asyncio.to_thread(store.save_layer, engine, parsed, code_field, name_field)
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


def _check_name(name: str) -> None:
    import re

    if not re.match(LAYER_NAME, name):
        raise ProblemError(
            422,
            "A layer name is 1-64 lower-case letters, digits, '-' or '_'.",
            slug="invalid-layer-name",
            field="layer",
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
    _check_name(layer)
    child = registry.building_layers().get(body.from_layer)
    if child is None:
        raise ProblemError(
            404, f"No layer {body.from_layer!r} is loaded.", slug="unknown-layer", field="from"
        )
    parent = await asyncio.to_thread(derive_layer, child, layer, body.code_from, body.name_from)
    await asyncio.to_thread(store.save_layer, engine, parent, "code", "name", body.from_layer)
    return {
        "layer": layer,
        "areas": len(parent),
        "derived_from": body.from_layer,
        "rebuild": await trigger_rebuild(request),
    }


def _check_k(k: int, catalogue: dict[str, Dataset]) -> None:
    """A snap layer must keep the k of the datasets that snap: a smaller one would serve none."""
    needed = [d.generalisation.k for d in catalogue.values() if d.generalisation.method == "snap"]
    if needed and k < min(needed):
        raise ProblemError(
            422,
            f"k = {k} is below the k = {min(needed)} the snapping datasets need.",
            slug="k-below-dataset",
            field="k",
        )


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
    _check_name(name)
    _check_k(k, catalogue)
    body = await _body(request, settings.max_upload_bytes)
    x, y, households = read_candidates(body)
    snap = await asyncio.to_thread(build_snap_layer, name, x, y, households, k)
    await asyncio.to_thread(store.save_snap_layer, engine, snap)
    return {"name": name, **snap.report, "rebuild": await trigger_rebuild(request)}


@router.post("/snap-layers/{name}/postcodes", status_code=201)
async def load_snap_layer_from_postcodes(
    request: Request,
    name: str,
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
    registry: RegistryDep,
    catalogue: CatalogueDep,
    layer: str,
    k: Annotated[int, Query(ge=1, le=1000)] = 8,
    persons_per_household: Annotated[float, Query(gt=0, le=20)] = PERSONS_PER_HOUSEHOLD,
) -> dict[str, Any]:
    """A snap layer from postcode centroids (Code-Point Open or ONSPD CSV as the body) and the
    people of ``layer``'s areas (its population table; ``persons_per_household=1`` when that
    table counts households)."""
    _check_name(name)
    _check_k(k, catalogue)
    areas = registry.active.get(layer)
    people = store.population(engine, layer) if areas is not None else None
    if areas is None or people is None:
        raise ProblemError(
            422,
            f"Load layer {layer!r} and its population table (POST /v1/populations/{layer}) first.",
            slug="no-household-estimate",
            field="layer",
        )
    body = await _body(request, settings.max_upload_bytes)
    x, y = postcode_centroids(body)
    x, y, households = spread_households(x, y, areas, people, persons_per_household)
    snap = await asyncio.to_thread(build_snap_layer, name, x, y, households, k)
    snap.report["postcodes"] = len(x)
    await asyncio.to_thread(store.save_snap_layer, engine, snap)
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
    body = await _body(request, settings.max_upload_bytes)
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype={code_column: str})
    except Exception as exc:
        raise ProblemError(
            422, "The CSV could not be parsed.", slug="invalid-csv", field="body"
        ) from exc
    for column, param in ((code_column, "code_column"), (population_column, "population_column")):
        if column not in frame.columns:
            raise ProblemError(
                422, f"The CSV has no column {column!r}.", slug="missing-column", field=param
            )
    values = pd.to_numeric(frame[population_column], errors="coerce")
    bad = int((values.isna() | (values < 0)).sum())
    if bad:
        raise ProblemError(
            422,
            f"{bad} rows have no valid population.",
            slug="invalid-population",
            field=population_column,
        )
    table = dict(zip(frame[code_column].astype(str).str.strip(), values.astype(float), strict=True))
    codes = set(known.codes.tolist())
    matched = {c: v for c, v in table.items() if c in codes}
    await asyncio.to_thread(store.save_population, engine, layer, matched)
    return {
        "layer": layer,
        "areas": len(codes),
        "matched": len(matched),
        "areas_without_population": len(codes - set(matched)),
        "rows_not_in_layer": len(table) - len(matched),
    }


# --- reads ------------------------------------------------------------------------------------


def _read_scope(claims: InternalClaims, dataset: str) -> Slices:
    if claims.dataset is not None and claims.dataset != dataset:
        raise ProblemError(
            403,
            "The decision forwarded is for another dataset.",
            slug="forbidden",
            rule="dataset-mismatch",
        )
    return slices(claims)


AGGREGATE_FORMATS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": AggregateTable,
        "description": "The complete table, small counts suppressed",
        "content": {
            MEDIA["csv"].split(";")[0]: {"schema": {"type": "string"}},
            MEDIA["geojson"]: {"schema": {"type": "object"}},
        },
    }
}


COHORT_DATASET = tables.COHORT_DATASET
BREAKDOWN_CLASSES = cube.BREAKDOWN_CLASSES


@router.get("/datasets/{dataset}/aggregates", responses=AGGREGATE_FORMATS)
def read_aggregates(
    request: Request,
    dataset: str,
    claims: ClaimsDep,
    engine: EngineDep,
    reader: ReadEngineDep,
    registry: RegistryDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    geography: str | None = None,
    period: Annotated[str, Period] = "month",
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
    by: Annotated[str | None, Query(max_length=100)] = None,
    threshold: Annotated[int | None, Query(ge=1)] = None,
    cohort: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    count: Annotated[str, Query(pattern="^(records|people)$")] = "records",
    relative: Annotated[str | None, Query(pattern="^joined$")] = None,
    format: str | None = None,
) -> Response:
    spec = dataset_or_404(catalogue, dataset)
    scope = _read_scope(claims, dataset)
    providers = scope.providers
    fmt = choose_format(format, request.headers.get("accept"))
    if relative is not None and cohort is None:
        raise ProblemError(
            422, "relative=joined needs cohort.", slug="relative-without-cohort", field="relative"
        )
    if geography is None and cohort is None:
        raise ProblemError(
            422, "geography is required unless cohort is given.", slug="missing", field="geography"
        )
    if relative is not None and period not in RELATIVE_REACH:
        raise ProblemError(
            422,
            "relative=joined counts by month or quarter.",
            slug="period-not-relative",
            field="period",
        )
    if count == "people" and not spec.link_fields:
        raise ProblemError(
            422,
            f"{dataset} has no person fields: it cannot be counted by people.",
            slug="no-person-fields",
            field="count",
        )
    _check_breakdown(spec, scope, by)
    layer = _layer_or_error(registry, geography) if geography is not None else None
    if not coarser_or_equal(period, spec.time_resolution):
        raise ProblemError(
            422,
            f"{dataset} is held by {spec.time_resolution}; it cannot be counted by {period}.",
            slug="period-too-fine",
            field="period",
        )
    if from_ and to and from_ > to:
        raise ProblemError(422, "from is after to.", slug="invalid-range", field="from")
    area_list = (
        list(zip(layer.codes.tolist(), layer.names.tolist(), strict=True))
        if layer is not None
        else [(ALL, ALL)]
    )
    _check_table_size(from_, to, period, len(area_list), settings.max_cells)
    tables.check_whole_periods(from_, to, period, relative is not None)
    rule = _rule(spec, threshold)
    people = count == "people"
    left_out: list[str] = []
    if cohort is None:
        answer = tables.cube_table(
            reader,
            registry,
            spec,
            scope,
            str(geography),
            area_list,
            (period, from_, to),
            by,
            rule,
            people,
        )
    else:
        cohort_scope = _cohort_scope(claims, dataset, scope)
        if dataset != COHORT_DATASET:
            rule = rule.stricter(_rule(dataset_or_404(catalogue, COHORT_DATASET), threshold))
        answer = tables.cohort_table(
            reader,
            registry,
            spec,
            (scope, cohort_scope),
            geography,
            area_list,
            (period, from_, to),
            by,
            rule,
            (cohort, people, relative),
        )
        held = store.providers_holding(reader, registry.generation, dataset)
        if dataset != COHORT_DATASET:
            held |= store.providers_holding(reader, registry.generation, COHORT_DATASET)
        left_out = sorted(held - set(providers) - set(cohort_scope.providers))
    query = {
        "geography": geography,
        "period": period,
        "from": str(from_ or ""),
        "to": str(to or ""),
        "by": by,
        "threshold": rule.threshold,
        "providers": providers,
        "format": fmt,
        "cohort": cohort,
        "count": count,
        "relative": relative,
    }
    release_id = store.record_release(
        engine, "aggregates", dataset, claims.sub, claims.agreement, query, answer["disclosure"]
    )
    body = {
        "dataset": dataset,
        "geography": geography or ALL,
        "period": period,
        "rule": rule.as_dict(),
        "cells": answer["cells"],
        "disclosure": answer["disclosure"],
        "agreement": claims.agreement,
        "release_id": release_id,
    }
    if cohort is not None:
        body.update(cohort=cohort, count=count, relative=relative, providers_left_out=left_out)
    headers = {"CSP-Release-ID": release_id}
    if answer["disclosure"].get("records") is not None:
        headers[RECORD_COUNT] = str(answer["disclosure"]["records"])
    if fmt == "csv":
        first = ["area", "area_name", "period"] + ([by] if by else []) + ["count", "suppressed"]
        headers["CSP-Disclosure"] = json.dumps(answer["disclosure"], separators=(",", ":"))
        return Response(
            to_csv(body["cells"], columns_of(body["cells"], first)),
            media_type=MEDIA["csv"],
            headers=headers,
        )
    if fmt == "geojson":
        if geography is None or layer is None:
            raise ProblemError(
                422, "GeoJSON needs geography.", slug="geojson-without-layer", field="format"
            )
        shapes = _wire_shapes(request, geography, layer, settings.wire_simplify_metres, registry)
        return JSONResponse(
            aggregates_geojson(body, shapes), media_type=MEDIA["geojson"], headers=headers
        )
    return Response(aggregates_json(body), media_type=MEDIA["json"], headers=headers)


def _layer_or_error(registry: store.Registry, geography: str) -> Any:
    layer = registry.active.get(geography)
    if layer is None:
        pending = geography in registry.pending
        raise ProblemError(
            409 if pending else 404,
            f"Layer {geography!r} is still being built." if pending else f"No layer {geography!r}.",
            slug="layer-rebuilding" if pending else "unknown-layer",
            field="geography",
            headers={"Retry-After": retry_after(registry.rebuild)} if pending else None,
        )
    return layer


def _check_breakdown(spec: Dataset, scope: Slices, by: str | None) -> None:
    """``by`` names the dataset's category or one of its attribute fields that a grant shows."""
    if by is None:
        return
    field = spec.field(by)
    known = by == "category" or (field is not None and field.classification in BREAKDOWN_CLASSES)
    granted = scope.uniform_fields()
    if not known or (granted is not None and by not in granted):
        raise ProblemError(
            422,
            f"{spec.name} cannot be counted by {by!r}: "
            + ("not one of its attribute fields." if not known else "no grant includes it."),
            slug="invalid-breakdown",
            field="by",
        )


def _cohort_scope(claims: InternalClaims, dataset: str, scope: Slices) -> Slices:
    """The caller's grants on offender-cohort, carried beside those on the dataset counted."""
    if dataset == COHORT_DATASET:
        return scope
    if claims.cohort_grants is None:
        raise ProblemError(
            403,
            "A cohort query needs a grant on offender-cohort.",
            slug="forbidden",
            rule="cohort-not-granted",
        )
    return slices_of(claims.cohort_grants)


def _check_table_size(
    first: date | None, last: date | None, period: str, areas: int, max_cells: int
) -> None:
    """Refuse a range outside the supported years, or one whose table would be unreasonably big."""
    for name, day in (("from", first), ("to", last)):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise ProblemError(
                422,
                f"{name} must lie between {EARLIEST} and {LATEST}.",
                slug="invalid-range",
                field=name,
            )
    if first is not None and last is not None:
        cells = period_count(first, last, period) * areas
        if cells > max_cells:
            raise ProblemError(
                422,
                f"The table would have {cells:,} cells (limit {max_cells:,}): narrow the range "
                "or choose a coarser period.",
                slug="table-too-large",
                field="from",
            )


@router.get("/releases/{release_id}")
def show_release(release_id: str, claims: ClaimsDep, engine: EngineDep) -> dict[str, Any]:
    """A past answer's query and disclosure figures, for its recipient or operators."""
    found = store.release(engine, release_id) if len(release_id) <= 32 else None
    if found is None or not (claims.is_admin or found["agency"] == claims.sub):
        raise ProblemError(404, f"No release {release_id!r}.", slug="unknown-release")
    return found


def _rule(spec: Dataset, asked: int | None) -> Rule:
    rule = spec.disclosure
    if asked is not None and asked < rule.floor:
        raise ProblemError(
            422,
            f"The threshold may not go below the dataset's floor of {rule.floor}.",
            slug="threshold-below-floor",
            field="threshold",
            rule="disclosure-floor",
        )
    threshold = max(asked or rule.threshold, rule.floor, rule.threshold)
    noise = rule.perturbation.max if rule.perturbation is not None else None
    return Rule(threshold, rule.round_to, rule.secondary, noise, rule.threshold)


def _wire_shapes(
    request: Request, geography: str, layer: Any, tolerance: float, registry: store.Registry
) -> dict[str, dict[str, Any]]:
    cache: dict[tuple[str, int], dict[str, dict[str, Any]]] = request.app.state.wire_cache
    key = (geography, registry.version)
    if key not in cache:
        cache.clear()
        cache[key] = wire_features(layer, tolerance)
    return cache[key]


def _cursor(after: str | None) -> int:
    return decode_int_cursor(after, detail="The cursor is not valid.", slug="invalid-cursor")


@router.get("/datasets/{dataset}/records")
def read_records(
    request: Request,
    dataset: str,
    claims: ClaimsDep,
    engine: EngineDep,
    reader: ReadEngineDep,
    registry: RegistryDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 1000,
    level: str = "depersonalised",
    format: str | None = None,
) -> Response:
    spec = dataset_or_404(catalogue, dataset)
    scope = _read_scope(claims, dataset)
    providers = scope.providers
    if level != "depersonalised":
        raise ProblemError(
            422,
            "This service answers the depersonalised level only.",
            slug="wrong-level",
            field="level",
        )
    if spec.max_level == "aggregate":
        raise ProblemError(
            403,
            f"{dataset} is shared only as aggregates.",
            slug="forbidden",
            rule="dataset-aggregate-only",
        )
    if claims.level not in {"depersonalised", "personal"}:
        raise ProblemError(
            403,
            "The agreement does not allow record-level data.",
            slug="forbidden",
            rule="level-not-agreed",
        )
    fmt = choose_format(format, request.headers.get("accept"))
    rows = store.record_page(
        reader,
        registry.generation,
        dataset,
        scope,
        _cursor(cursor),
        min(limit, settings.records_page_max),
    )
    allowed: dict[frozenset[str] | None, set[str]] = {}
    residents = _residents(reader, registry)
    records = []
    for r in rows:
        # Each record shows only what its own provider's grants allow on the day it occurred.
        shown = scope.fields_for(r["provider"], r["occurred_on"] or r["period_start"])
        if shown is None:
            continue
        if shown.names not in allowed:
            names = None if shown.names is None else sorted(shown.names)
            allowed[shown.names] = allowed_fields(spec, names)
        fields = allowed[shown.names]
        point_shown = bool(fields & LOCATION_FIELDS) and r["x"] is not None
        areas = record_areas(
            r["areas"] or {}, r["point_areas"], point_shown, spec.generalisation.k, residents
        )
        records.append(
            public_record(
                None if r["period_start"] is None else _label(r["period_start"], spec),
                r["category"],
                r["attributes"] or {},
                areas,
                (r["x"], r["y"]),
                r["method"],
                r["k"],
                fields,
            )
        )
    full = len(rows) == min(limit, settings.records_page_max)
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and full else None
    k_min, k_median, histogram, total, without = store.record_figures(
        reader, registry.generation, dataset, scope
    )
    report = figures_report(k_min, k_median, histogram, total, without)
    release_id = store.record_release(
        engine,
        "records",
        dataset,
        claims.sub,
        claims.agreement,
        {"providers": providers, "cursor": cursor, "limit": limit, "format": fmt},
        {**report, "returned": len(records)},
    )
    headers = {"CSP-Release-ID": release_id, RECORD_COUNT: str(len(records))}
    if fmt == "csv":
        headers["CSP-Disclosure"] = json.dumps(report, separators=(",", ":"))
        if next_cursor:
            headers["CSP-Next-Cursor"] = next_cursor
        return Response(records_csv(records), media_type=MEDIA["csv"], headers=headers)
    extra = {
        "dataset": dataset,
        "next_cursor": next_cursor,
        "disclosure": report,
        "agreement": claims.agreement,
        "release_id": release_id,
    }
    if fmt == "geojson":
        return JSONResponse(
            records_geojson(records, extra), media_type=MEDIA["geojson"], headers=headers
        )
    return JSONResponse({"records": records, **extra}, headers=headers)


def _residents(engine: Any, registry: store.Registry) -> dict[str, dict[str, float] | None]:
    """Each active layer's population table (None where none is loaded)."""
    return {name: store.population(engine, name) for name in registry.active}


def _label(day: date, spec: Dataset) -> str:
    from services.depersonalise.service import period_label

    return period_label(day, spec.time_resolution)


@router.post("/depersonalise")
async def depersonalise_now(
    request: Request,
    claims: ClaimsDep,
    engine: EngineDep,
    registry: RegistryDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    dataset: str,
    format: str | None = None,
) -> Response:
    spec = dataset_or_404(catalogue, dataset)
    _may_use_the_tool(claims, spec)
    body = await _body(request, settings.max_depersonalise_bytes)
    # Parsing takes time in proportion to the body: off the event loop, so others are served.
    incoming = await asyncio.to_thread(_incoming_records, body, request.headers.get("content-type"))
    records, errors = _validated(spec, incoming)
    x, y = points_of(records)
    run = await asyncio.to_thread(mask_records, spec, records, x, y, registry.active, registry.snap)
    allowed = allowed_fields(spec, claims.fields if claims.fields is not None else None)
    residents = _residents(engine, registry)
    out = [masked_public(m, allowed, residents, spec.generalisation.k) for m in run.records]
    report = {**run.report(), "received": len(incoming), "rejected": len(incoming) - len(records)}
    fmt = choose_format(format, request.headers.get("accept"))
    if fmt == "csv":
        return Response(
            records_csv(out),
            media_type=MEDIA["csv"],
            headers={"CSP-Disclosure": json.dumps(report, separators=(",", ":"))},
        )
    if fmt == "geojson":
        return JSONResponse(
            records_geojson(out, {"dataset": dataset, "disclosure": report}),
            media_type=MEDIA["geojson"],
        )
    return JSONResponse(
        {"dataset": dataset, "records": out, "disclosure": report, "errors": errors},
        headers={"CSP-Record-Count": str(len(out))},
    )


def _may_use_the_tool(claims: InternalClaims, spec: Dataset) -> None:
    """Operators, or a caller whose grant on this dataset reaches the depersonalised level: the
    tool would otherwise map catchments point by point for anyone."""
    if spec.max_level == "aggregate" or spec.location == "none":
        raise ProblemError(
            403,
            f"{spec.name} is never published record by record.",
            slug="forbidden",
            rule="dataset-aggregate-only",
        )
    if claims.is_admin:
        return
    if claims.dataset != spec.name or claims.level not in {"depersonalised", "personal"}:
        raise ProblemError(
            403,
            "Only operators and agencies with a depersonalised-level grant on the dataset may "
            "use the tool.",
            slug="forbidden",
            rule="level-not-agreed",
        )


def _validated(
    spec: Dataset, incoming: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows that validate as a push would, and per-row errors for the others."""
    compiled = _compiled(spec.name, spec)
    kept, errors = [], []
    for row, raw in enumerate(incoming, start=1):
        clean, _unlisted, problems = validate_row(compiled, raw)
        if problems:
            errors += [{"row": row, "field": f, "message": m} for f, m in problems]
        else:
            kept.append(clean)
    return kept, errors


_COMPILED: dict[str, CompiledDataset] = {}


def _compiled(name: str, spec: Dataset) -> CompiledDataset:
    """The push's validation, except that nothing is stored, so no ``source_ref`` is needed."""
    if name not in _COMPILED:
        fields = [
            f.model_copy(update={"required": False}) if f.name == "source_ref" else f
            for f in spec.fields
        ]
        _COMPILED[name] = compile_dataset(spec.model_copy(update={"fields": fields}))
    return _COMPILED[name]


def _incoming_records(body: bytes, content_type: str | None) -> list[dict[str, Any]]:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "text/csv" or (
        kind != "application/json" and not body.lstrip().startswith((b"{", b"["))
    ):
        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except Exception as exc:
            raise ProblemError(
                422, "The CSV could not be parsed.", slug="invalid-csv", field="body"
            ) from exc
        return [
            {k: (v if v != "" else None) for k, v in row.items()}
            for row in frame.to_dict("records")
        ]
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProblemError(
            422, "The body is not valid JSON.", slug="invalid-json", field="body"
        ) from exc
    records = parsed.get("records") if isinstance(parsed, dict) else parsed
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ProblemError(
            422,
            'The body must be {"records": [...]} of objects.',
            slug="invalid-records",
            field="records",
        )
    return records
