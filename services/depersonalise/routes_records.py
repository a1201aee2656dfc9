"""Routes of depersonalised records: a page of stored records, and the depersonalisation tool
(records sent in, depersonalised and sent back, nothing stored)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from services.depersonalise.deps import (
    CatalogueDep,
    RegistryDep,
    ReleaseRequestDep,
    SettingsDep,
    WriterReadDep,
    body_of,
    registries,
)
from services.depersonalise.formats import MEDIA, choose_format, records_csv, records_geojson
from services.depersonalise.layer_registry import Registry, on_served_generation
from services.depersonalise.masking_figures import figures_report
from services.depersonalise.public_records import allowed_fields, masked_public, points_of
from services.depersonalise.record_bodies import incoming_records, validated
from services.depersonalise.record_policy import (
    check_record_read,
    may_use_the_tool,
    read_scope,
    residents,
    shown_records,
)
from services.depersonalise.record_reads import record_figures, record_page
from services.depersonalise.releases import record_release
from services.depersonalise.service import dataset_or_404, mask_records
from shared.deps import ClaimsDep
from shared.http import decode_int_cursor, encode_cursor
from shared.tokens import RECORD_COUNT

router = APIRouter(prefix="/v1", tags=["depersonalise"])


def _cursor(after: str | None) -> int:
    return decode_int_cursor(after, detail="The cursor is not valid.", slug="invalid-cursor")


@router.get("/datasets/{dataset}/records")
def read_records(
    request: Request,
    dataset: str,
    asked: ReleaseRequestDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1)] = 1000,
    level: str = "depersonalised",
    format: str | None = None,
) -> Response:
    claims, conn = asked.claims, asked.conn
    spec = dataset_or_404(asked.catalogue, dataset)
    scope = read_scope(claims, dataset)
    check_record_read(spec, claims, level)
    fmt = choose_format(format, request.headers.get("accept"))
    page_size = min(limit, asked.settings.records_page_max)
    after = _cursor(cursor)

    def page(registry: Registry) -> tuple[list[Any], list[Any], dict[str, Any]]:
        rows = record_page(conn, registry.generation, dataset, scope, after, page_size)
        records = shown_records(rows, spec, scope, residents(conn, registry))
        return (
            rows,
            records,
            figures_report(*record_figures(conn, registry.generation, dataset, scope)),
        )

    _, (rows, records, report) = on_served_generation(
        conn, registries(request, asked.registry), page
    )
    next_cursor = encode_cursor(rows[-1]["id"]) if rows and len(rows) == page_size else None
    release_id = record_release(
        asked.writer,
        "records",
        dataset,
        claims.sub,
        claims.agreement,
        {"providers": scope.providers, "cursor": cursor, "limit": limit, "format": fmt},
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


@router.post("/depersonalise")
async def depersonalise_now(
    request: Request,
    claims: ClaimsDep,
    registry: RegistryDep,  # before the held connection: its reload takes one of its own
    conn: WriterReadDep,
    settings: SettingsDep,
    catalogue: CatalogueDep,
    dataset: str,
    format: str | None = None,
) -> Response:
    spec = dataset_or_404(catalogue, dataset)
    may_use_the_tool(claims, spec)
    body = await body_of(request, settings.max_depersonalise_bytes)
    # Parsing takes time in proportion to the body: off the event loop, so others are served.
    incoming = await asyncio.to_thread(incoming_records, body, request.headers.get("content-type"))
    records, errors = validated(spec, incoming)
    x, y = points_of(records)
    run = await asyncio.to_thread(mask_records, spec, records, x, y, registry.active, registry.snap)
    allowed = allowed_fields(spec, claims.fields if claims.fields is not None else None)
    people = residents(conn, registry)
    out = [masked_public(m, allowed, people, spec.generalisation.k) for m in run.records]
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
