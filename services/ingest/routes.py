"""HTTP for ingest's datasets and batches: the catalogue, pushes, retractions, personal-level reads,
data quality and batch status; each route translates a request to domain calls and back.
Operators' and peers' routes: ``operations_routes``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from services.ingest import schema
from services.ingest.agreed_fields import check_header
from services.ingest.batches import batch_status
from services.ingest.bodies import HeaderWatch, csv_header, csv_lines, csv_rows, json_rows
from services.ingest.deps import (
    DatasetDep,
    EngineDep,
    ReadDep,
    SettingsDep,
    StateDep,
    WriteDep,
    app_state,
)
from services.ingest.idempotency import fingerprint, push_once
from services.ingest.models import BatchPublic, PushAnswer
from services.ingest.personal_reads import personal_page, record_read
from services.ingest.quality import quality
from services.ingest.retraction import retract
from services.ingest.service import PushOptions, push
from services.ingest.settings import Settings, record_key_secret
from services.ingest.state import IngestState
from shared.app import request_id
from shared.catalogue import load_catalogue
from shared.deps import ClaimsDep
from shared.errors import ProblemError
from shared.grants import Slices, slices
from shared.http import (
    CSV_MEDIA,
    SpooledBody,
    negotiate,
    refuse_declared_over,
    spool,
)
from shared.tokens import RECORD_COUNT, InternalClaims
from shared.validation import CompiledDataset

datasets = APIRouter(prefix="/v1/datasets", tags=["datasets"])
batches = APIRouter(prefix="/v1/batches", tags=["batches"])

CSV_TYPES = {"text/csv", "application/csv"}


def _push_openapi() -> dict[str, Any]:
    bodies = [schema.push_body_schema(d) for d in load_catalogue().values()]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"oneOf": bodies}},
                "text/csv": {
                    "schema": {
                        "type": "string",
                        "description": "UTF-8 (BOM allowed), comma or semicolon separated; the "
                        "header names the fields (see the dataset's csv_template).",
                    }
                },
            },
        }
    }


def _wants_csv(request: Request, format: str | None) -> bool:
    return negotiate(format, request.headers.get("accept"), [("text/csv", "csv")], "json") == "csv"


@datasets.get("")
async def list_datasets(request: Request, _claims: ClaimsDep) -> dict[str, Any]:
    return {
        "datasets": [schema.summary(c.dataset) for c in app_state(request.app).datasets.values()]
    }


@datasets.get("/{dataset}", response_model=None)
async def get_dataset(
    compiled: DatasetDep,
    request: Request,
    _claims: ClaimsDep,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> dict[str, Any] | Response:
    if _wants_csv(request, format):
        return Response(
            schema.csv_template(compiled.dataset),
            media_type=CSV_MEDIA,
            headers={"Content-Disposition": f'attachment; filename="{compiled.dataset.name}.csv"'},
        )
    return schema.describe(compiled.dataset)


@datasets.post(
    "/{dataset}/records",
    status_code=202,
    openapi_extra=_push_openapi(),
    responses={202: {"model": PushAnswer, "description": "Accepted, with per-row errors"}},
)
async def push_records(
    compiled: DatasetDep,
    request: Request,
    claims: ClaimsDep,
    settings: SettingsDep,
    engine: EngineDep,
    state: StateDep,
    atomic: bool = False,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JSONResponse:
    """Push a batch: JSON ``{"records": [...]}`` or CSV; 202 with per-row errors."""
    name = compiled.dataset.name
    if claims.dataset is not None and claims.dataset != name:
        raise ProblemError(
            403, "The decision was made for another dataset.", rule="dataset-mismatch"
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_csv = media in CSV_TYPES
    if not is_csv and not (media == "application/json" or media.endswith("+json")):
        raise ProblemError(
            415,
            "Send application/json or text/csv.",
            slug="unsupported-media-type",
            field="Content-Type",
        )
    refuse_declared_over(request.headers.get("content-length"), settings.max_body_bytes)
    watch = HeaderWatch(len(compiled.names)).feed if is_csv else None
    body = await spool(request.stream(), settings.max_body_bytes, watch=watch)
    try:
        return await _push_spooled(
            request,
            compiled,
            claims,
            settings,
            engine,
            state,
            atomic,
            idempotency_key or None,
            body,
            is_csv,
        )
    finally:
        body.close()


def _push_options(
    claims: InternalClaims,
    settings: Settings,
    state: IngestState,
    atomic: bool,
    idempotency_key: str | None,
    request_fingerprint: str,
) -> PushOptions:
    return PushOptions(
        provider=claims.sub,
        atomic=atomic,
        allowed_fields=claims.fields,
        chunk_rows=settings.chunk_rows,
        max_rows=settings.max_rows_per_batch,
        max_errors=settings.max_errors_listed,
        idempotency=(idempotency_key, request_fingerprint, settings.idempotency_ttl_hours)
        if idempotency_key
        else None,
        linkage=state.linkage,
        catalogue=state.catalogue,
    )


async def _push_spooled(
    request: Request,
    compiled: CompiledDataset,
    claims: InternalClaims,
    settings: Settings,
    engine: Engine,
    state: IngestState,
    atomic: bool,
    idempotency_key: str | None,
    body: SpooledBody,
    is_csv: bool,
) -> JSONResponse:
    url, content_type = request.url, request.headers.get("content-type", "")
    digest = fingerprint(request.method, url.path, url.query, body.sha256, content_type)
    options = _push_options(claims, settings, state, atomic, idempotency_key, digest)

    def work() -> dict[str, Any]:
        text = body.text()
        if is_csv:
            header, reader = csv_header(text, len(compiled.names))
            check_header(compiled, header, claims.fields)
            rows = csv_rows(header, reader)
        else:
            rows = json_rows(text)
        return push(engine, compiled, rows, options).answer()

    async def run() -> dict[str, Any]:
        try:
            async with state.push_turns:
                return await asyncio.to_thread(work)
        except OperationalError as exc:
            # Writers of this process queue (shared.db.write_transaction); this is only for
            # another process holding a SQLite file longer than its busy timeout.
            raise ProblemError(
                503,
                "The store is busy with another batch; retry shortly.",
                slug="store-busy",
                headers={"Retry-After": "5"},
            ) from exc

    answer, replayed = await push_once(
        engine, state.in_flight, claims.sub, idempotency_key, digest, run
    )
    if replayed:
        return JSONResponse(answer, status_code=202, headers={"Idempotent-Replayed": "true"})
    return JSONResponse(answer, status_code=202, headers={RECORD_COUNT: str(answer["accepted"])})


# ``:path``: a reference may hold "/" (CR/2024/1), sent as %2F and decoded before routing.
@datasets.delete("/{dataset}/records/{source_ref:path}", status_code=204)
async def retract_record(
    request: Request,
    compiled: DatasetDep,
    source_ref: str,
    claims: ClaimsDep,
    settings: SettingsDep,
    connection: WriteDep,
) -> Response:
    """Retract a record everywhere it went (a delete event follows to depersonalise)."""
    if claims.action != "retract" or claims.dataset != compiled.dataset.name:
        # A token the gateway issued for another call (a read, another dataset) retracts nothing.
        raise ProblemError(
            403, "The decision was not made for this retraction.", rule="decision-mismatch"
        )
    secret = record_key_secret(settings)
    await asyncio.to_thread(
        retract,
        connection,
        secret,
        claims.sub,
        compiled.dataset.name,
        source_ref,
        linkage=(app_state(request.app).catalogue, app_state(request.app).linkage),
    )
    return Response(status_code=204, headers={RECORD_COUNT: "1"})


def _personal_reader(claims: InternalClaims, compiled: DatasetDep, level: str) -> Slices:
    if level != "personal":
        raise ProblemError(
            400,
            "Ingest serves only level=personal; other levels are served by depersonalise.",
            slug="level-not-served",
            field="level",
        )
    if compiled.dataset.max_level != "personal":
        raise ProblemError(
            403,
            f"{compiled.dataset.name} is never shared at level personal.",
            rule="level-above-dataset-maximum",
        )
    if claims.level != "personal" or claims.providers is None:
        raise ProblemError(
            403, "No agreement allows a personal-level read.", rule="level-not-agreed"
        )
    return slices(claims)


@datasets.get("/{dataset}/records", response_model=None)
async def read_personal(
    compiled: DatasetDep,
    request: Request,
    claims: ClaimsDep,
    connection: ReadDep,
    level: str = "depersonalised",
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> dict[str, Any] | Response:
    """Personal-level records of the agreed providers: agreed fields, agreement dates only."""
    scope = _personal_reader(claims, compiled, level)
    columns, rows, following = await asyncio.to_thread(
        personal_page, connection, compiled.dataset, scope, cursor, limit
    )
    await asyncio.to_thread(
        record_read,
        connection,
        agency=claims.sub,
        dataset=compiled.dataset.name,
        agreement=claims.agreement,
        version=claims.version,
        purpose=claims.purpose,
        records=len(rows),
        request_id=request_id(request) or None,
    )
    headers = {"Cache-Control": "no-store", RECORD_COUNT: str(len(rows))}
    if following is not None:
        # Relative: the backend's own address never reaches the client.
        following_url = request.url.include_query_params(cursor=following)
        headers["Link"] = f'<{following_url.path}?{following_url.query}>; rel="next"'
    if _wants_csv(request, format):
        lines = csv_lines(columns, ([row.get(c) for c in columns] for row in rows))
        return StreamingResponse(lines, media_type=CSV_MEDIA, headers=headers)
    body = {
        "dataset": compiled.dataset.name,
        "level": "personal",
        "agreement": claims.agreement,
        "count": len(rows),
        "next_cursor": following,
        "records": rows,
    }
    return JSONResponse(body, headers=headers)


@datasets.get("/{dataset}/quality")
async def dataset_quality(
    compiled: DatasetDep,
    claims: ClaimsDep,
    connection: ReadDep,
    period: Annotated[str, Query(pattern="^(month|quarter|year)$")] = "month",
    provider: str | None = None,
) -> dict[str, Any]:
    """Data quality of the caller's own records (operators: everyone's, or one provider's)."""
    who = (provider if claims.is_admin else claims.sub) or None
    return await asyncio.to_thread(quality, connection, compiled.dataset, who, period)


@batches.get("/{batch_id}")
async def get_batch(batch_id: str, claims: ClaimsDep, connection: ReadDep) -> BatchPublic:
    status = await asyncio.to_thread(
        batch_status, connection, batch_id, claims.sub, claims.is_admin
    )
    return BatchPublic.model_validate(status)
