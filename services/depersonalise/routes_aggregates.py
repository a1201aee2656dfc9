"""Routes of the aggregates: a table counted under the caller's grants, and past releases."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from services.depersonalise.aggregate_query import (
    AggregateQuery,
    answer_body,
    checked_areas,
    count_table,
    release_query,
)
from services.depersonalise.aggregates import Rule
from services.depersonalise.deps import (
    ReleaseRequest,
    ReleaseRequestDep,
    WriterReadDep,
    app_state,
    registries,
)
from services.depersonalise.formats import (
    MEDIA,
    aggregates_geojson,
    aggregates_json,
    choose_format,
    columns_of,
    to_csv,
)
from services.depersonalise.layer_registry import Registry, on_served_generation
from services.depersonalise.layers import wire_shapes
from services.depersonalise.models import AggregateTable
from services.depersonalise.record_policy import read_scope
from services.depersonalise.releases import record_release, release
from services.depersonalise.service import dataset_or_404
from shared.deps import ClaimsDep
from shared.errors import ProblemError
from shared.tokens import RECORD_COUNT

router = APIRouter(prefix="/v1", tags=["depersonalise"])

Period = Query(pattern="^(week|month|quarter|year)$")

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


@router.get("/datasets/{dataset}/aggregates", responses=AGGREGATE_FORMATS)
def read_aggregates(
    request: Request,
    dataset: str,
    asked: ReleaseRequestDep,
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
    claims = asked.claims
    spec = dataset_or_404(asked.catalogue, dataset)
    scope = read_scope(claims, dataset)
    fmt = choose_format(format, request.headers.get("accept"))
    query = AggregateQuery(geography, period, from_, to, by, threshold, cohort, count, relative)

    def counted(registry: Registry) -> tuple[Any, tuple[dict[str, Any], Rule, list[str]]]:
        layer, area_list = checked_areas(spec, scope, registry, query, asked.settings.max_cells)
        table = count_table(
            asked.conn, registry, asked.catalogue, spec, (claims, scope), query, area_list
        )
        return layer, table

    registry, (layer, (answer, rule, left_out)) = on_served_generation(
        asked.conn, registries(request, asked.registry), counted
    )
    release_id = record_release(
        asked.writer,
        "aggregates",
        dataset,
        claims.sub,
        claims.agreement,
        release_query(query, rule, scope.providers, fmt),
        answer["disclosure"],
    )
    body = answer_body(query, rule, answer, (dataset, claims.agreement, release_id), left_out)
    headers = {"CSP-Release-ID": release_id}
    if answer["disclosure"].get("records") is not None:
        headers[RECORD_COUNT] = str(answer["disclosure"]["records"])
    if fmt == "csv":
        return _as_csv(body, by, answer["disclosure"], headers)
    if fmt == "geojson":
        return _as_geojson(
            request, replace(asked, registry=registry), (geography, layer), body, headers
        )
    return Response(aggregates_json(body), media_type=MEDIA["json"], headers=headers)


def _as_csv(
    body: dict[str, Any], by: str | None, disclosure: dict[str, Any], headers: dict[str, str]
) -> Response:
    first = ["area", "area_name", "period"] + ([by] if by else []) + ["count", "suppressed"]
    headers["CSP-Disclosure"] = json.dumps(disclosure, separators=(",", ":"))
    return Response(
        to_csv(body["cells"], columns_of(body["cells"], first)),
        media_type=MEDIA["csv"],
        headers=headers,
    )


def _as_geojson(
    request: Request,
    asked: ReleaseRequest,
    counted_on: tuple[str | None, Any],
    body: dict[str, Any],
    headers: dict[str, str],
) -> Response:
    geography, layer = counted_on
    if geography is None or layer is None:
        raise ProblemError(
            422, "GeoJSON needs geography.", slug="geojson-without-layer", field="format"
        )
    cache = app_state(request.app).wire_cache
    tolerance = asked.settings.wire_simplify_metres
    shapes = wire_shapes(cache, geography, layer, tolerance, asked.registry.version)
    return JSONResponse(
        aggregates_geojson(body, shapes), media_type=MEDIA["geojson"], headers=headers
    )


@router.get("/releases/{release_id}")
def show_release(release_id: str, claims: ClaimsDep, conn: WriterReadDep) -> dict[str, Any]:
    """A past answer's query and disclosure figures, for its recipient or operators."""
    found = release(conn, release_id) if len(release_id) <= 32 else None
    if found is None or not (claims.is_admin or found["agency"] == claims.sub):
        raise ProblemError(404, f"No release {release_id!r}.", slug="unknown-release")
    return found
