"""HTTP for ingest: translate requests to the domain functions and their answers back."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from services.ingest import records as record_store
from services.ingest import schema
from services.ingest.bodies import HeaderWatch, csv_header, csv_lines, csv_rows, json_rows
from services.ingest.deps import DatasetDep, EngineDep, SettingsDep, StateDep, app_state
from services.ingest.idempotency import fingerprint, push_once
from services.ingest.models import BatchPublic, ErasureRequest, PushAnswer
from services.ingest.outbox import holdings
from services.ingest.postcodes import load_postcodes, postcode_count
from services.ingest.report import QUARTER_PATTERN, parse_quarter, provider_rows, report
from services.ingest.report_render import report_csv, report_html
from services.ingest.retention import erase, purge_history, purges_after
from services.ingest.service import PushOptions, check_header, push
from services.ingest.settings import Settings, record_key_secret
from services.ingest.state import IngestState
from shared.app import request_id
from shared.catalogue import load_catalogue
from shared.errors import ProblemError
from shared.grants import Slices, slices
from shared.http import (
    CSV_MEDIA,
    SpooledBody,
    negotiate,
    refuse_declared_over,
    require_service,
    spool,
)
from shared.tokens import RECORD_COUNT, AdminDep, ClaimsDep, InternalClaims
from shared.validation import CompiledDataset

datasets = APIRouter(prefix="/v1/datasets", tags=["datasets"])
batches = APIRouter(prefix="/v1/batches", tags=["batches"])
operations = APIRouter(prefix="/v1", tags=["operations"])
reports = APIRouter(prefix="/v1/reports", tags=["reports"])
internal = APIRouter(prefix="/internal", tags=["internal"])

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
    request_fingerprint = fingerprint(
        request.method,
        request.url.path,
        request.url.query,
        body.sha256,
        request.headers.get("content-type", ""),
    )
    options = PushOptions(
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
    )

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
        engine, state.in_flight, claims.sub, idempotency_key, request_fingerprint, run
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
    engine: EngineDep,
) -> Response:
    """Retract a record everywhere it went (a delete event follows to depersonalise)."""
    if claims.action != "retract" or claims.dataset != compiled.dataset.name:
        # A token the gateway issued for another call (a read, another dataset) retracts nothing.
        raise ProblemError(
            403, "The decision was not made for this retraction.", rule="decision-mismatch"
        )
    secret = record_key_secret(settings)
    await asyncio.to_thread(
        record_store.retract,
        engine,
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
    engine: EngineDep,
    level: str = "depersonalised",
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> dict[str, Any] | Response:
    """Personal-level records of the agreed providers: agreed fields, agreement dates only."""
    scope = _personal_reader(claims, compiled, level)
    columns, rows, following = await asyncio.to_thread(
        record_store.personal_page, engine, compiled.dataset, scope, cursor, limit
    )
    await asyncio.to_thread(
        record_store.record_read,
        engine,
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
    engine: EngineDep,
    period: Annotated[str, Query(pattern="^(month|quarter|year)$")] = "month",
    provider: str | None = None,
) -> dict[str, Any]:
    """Data quality of the caller's own records (operators: everyone's, or one provider's)."""
    who = (provider if claims.is_admin else claims.sub) or None
    return await asyncio.to_thread(record_store.quality, engine, compiled.dataset, who, period)


@batches.get("/{batch_id}")
async def get_batch(batch_id: str, claims: ClaimsDep, engine: EngineDep) -> BatchPublic:
    status = await asyncio.to_thread(
        record_store.batch_status, engine, batch_id, claims.sub, claims.is_admin
    )
    return BatchPublic.model_validate(status)


def _report_format(request: Request, format: str | None) -> str:
    offered = [("text/html", "html"), ("text/csv", "csv")]
    return negotiate(format, request.headers.get("accept"), offered, "json")


@reports.get("/partnership", response_model=None)
async def partnership_report(
    request: Request,
    claims: ClaimsDep,
    engine: EngineDep,
    quarter: Annotated[str, Query(pattern=QUARTER_PATTERN, max_length=7)],
    format: Annotated[str | None, Query(pattern="^(json|csv|html)$")] = None,
) -> dict[str, Any] | Response:
    """The quarter's information sharing: operators see every provider, an agency its own rows,
    the agreements it is party to and the maturity of its partnerships."""
    try:
        period = parse_quarter(quarter)
    except ValueError as exc:
        raise ProblemError(
            422, f"quarter {exc}.", slug="validation-failed", field="quarter"
        ) from exc
    agency = None if claims.is_admin else claims.sub
    try:
        agreements = await app_state(request.app).agreement_entries(agency)
    except httpx.HTTPError as exc:
        raise ProblemError(
            503, "The agreements service could not answer.", slug="backend-unavailable"
        ) from exc
    rows = await asyncio.to_thread(
        provider_rows, engine, app_state(request.app).catalogue, period, None
    )
    body = report(period, rows, agreements)
    if agency is not None:
        body["rows"] = [r for r in rows if r["provider"] == agency]
    chosen = _report_format(request, format)
    if chosen == "csv":
        return Response(
            report_csv(body),
            media_type=CSV_MEDIA,
            headers={"Content-Disposition": f'attachment; filename="partnership-{quarter}.csv"'},
        )
    if chosen == "html":
        return HTMLResponse(report_html(body))
    return body


@operations.post("/postcodes", tags=["postcodes"])
async def load_postcode_layer(
    request: Request,
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
    replace: bool = False,
) -> dict[str, Any]:
    """Load Code-Point Open or ONSPD CSV as the postcode layer (``?replace=true`` swaps it)."""
    body = await spool(request.stream(), settings.max_body_bytes)
    try:
        return await asyncio.to_thread(load_postcodes, engine, body.text(), replace)
    finally:
        body.close()


@operations.get("/postcodes", tags=["postcodes"])
async def postcode_layer(_claims: ClaimsDep, engine: EngineDep) -> dict[str, int]:
    return {"postcodes": await asyncio.to_thread(postcode_count, engine)}


@operations.get("/purges", tags=["retention"])
async def list_purges(_admin: AdminDep, engine: EngineDep) -> dict[str, Any]:
    return {"purges": await asyncio.to_thread(purge_history, engine)}


@operations.post("/purges", tags=["retention"])
async def run_purge(request: Request, _admin: AdminDep) -> dict[str, Any]:
    """Run the retention purge now (it also runs on its schedule)."""
    return {"purges": await app_state(request.app).purge_now()}


@operations.post("/erasures", tags=["retention"])
async def erase_records(
    body: ErasureRequest, _admin: AdminDep, settings: SettingsDep, engine: EngineDep
) -> JSONResponse:
    """Erase a provider's records of a dataset on request (all, or the listed references)."""
    if body.dataset not in load_catalogue():
        raise ProblemError(
            404, f"No dataset {body.dataset!r}.", slug="unknown-dataset", field="dataset"
        )
    entry = await asyncio.to_thread(
        erase,
        engine,
        record_key_secret(settings),
        body.provider,
        body.dataset,
        body.source_refs,
    )
    answer = {k: entry[k] for k in ("provider", "dataset", "deleted", "batch_id")}
    return JSONResponse(answer, headers={"CSP-Record-Count": str(entry["deleted"])})


@internal.get("/records")
async def replay_records(
    request: Request,
    claims: ClaimsDep,
    dataset: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    provider: str | None = None,
) -> dict[str, Any]:
    """Current records of a dataset (optionally one provider's) as upsert events, for
    depersonalise to rebuild or reconcile from."""
    require_service(claims, operators=True)
    events, following = await asyncio.to_thread(
        app_state(request.app).relay.replay, dataset, after, limit, provider
    )
    return {"events": events, "next": following}


@internal.get("/holdings")
async def dataset_holdings(claims: ClaimsDep, engine: EngineDep, dataset: str) -> dict[str, Any]:
    """Per provider: records held raw and a digest of their revisions (the reconciler's side)."""
    require_service(claims, operators=True)
    return await asyncio.to_thread(holdings, engine, dataset)


@internal.get("/purges")
async def purges_since(
    engine: EngineDep,
    claims: ClaimsDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    """Purge log entries after a cursor, oldest first: the gateway records each in its audit."""
    require_service(claims, operators=True)
    return {"purges": await asyncio.to_thread(purges_after, engine, after, limit)}
