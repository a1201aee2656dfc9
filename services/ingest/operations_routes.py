"""HTTP for ingest's operators and peers: the partnership report, the postcode layer, retention
(purges, erasures), and the internal routes depersonalise and the gateway call (replay, holdings,
the purge log). Each translates a request to one domain call and its answer back."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.ingest.deps import EngineDep, ReadDep, SettingsDep, app_state
from services.ingest.models import ErasureRequest
from services.ingest.outbox import holdings
from services.ingest.postcodes import load_postcodes, postcode_count
from services.ingest.report import QUARTER_PATTERN, parse_quarter, provider_rows, report
from services.ingest.report_render import report_csv, report_html
from services.ingest.retention import erase, purge_history, purges_after
from services.ingest.settings import record_key_secret
from shared.catalogue import load_catalogue
from shared.db import in_write_transaction
from shared.deps import AdminDep, ClaimsDep
from shared.errors import ProblemError
from shared.http import CSV_MEDIA, negotiate, require_service, spool

operations = APIRouter(prefix="/v1", tags=["operations"])
reports = APIRouter(prefix="/v1/reports", tags=["reports"])
internal = APIRouter(prefix="/internal", tags=["internal"])


def _report_format(request: Request, format: str | None) -> str:
    offered = [("text/html", "html"), ("text/csv", "csv")]
    return negotiate(format, request.headers.get("accept"), offered, "json")


@reports.get("/partnership", response_model=None)
async def partnership_report(
    request: Request,
    claims: ClaimsDep,
    connection: ReadDep,
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
        provider_rows, connection, app_state(request.app).catalogue, period, None
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
        # The request's one write, opened once the upload is read: the writer lock is not held
        # while a national file arrives.
        return await asyncio.to_thread(
            in_write_transaction, engine, load_postcodes, body.text(), replace
        )
    finally:
        body.close()


@operations.get("/postcodes", tags=["postcodes"])
async def postcode_layer(_claims: ClaimsDep, connection: ReadDep) -> dict[str, int]:
    return {"postcodes": await asyncio.to_thread(postcode_count, connection)}


@operations.get("/purges", tags=["retention"])
async def list_purges(_admin: AdminDep, connection: ReadDep) -> dict[str, Any]:
    return {"purges": await asyncio.to_thread(purge_history, connection)}


@operations.post("/purges", tags=["retention"])
async def run_purge(request: Request, _admin: AdminDep) -> dict[str, Any]:
    """Run the retention purge now (it also runs on its schedule)."""
    return {"purges": await app_state(request.app).purge_now()}


@operations.post("/erasures", tags=["retention"])
async def erase_records(
    request: Request,
    body: ErasureRequest,
    _admin: AdminDep,
    settings: SettingsDep,
    engine: EngineDep,
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
        linkage=(app_state(request.app).catalogue, app_state(request.app).linkage),
    )
    answer = {k: entry[k] for k in ("provider", "dataset", "deleted", "batch_id")}
    return JSONResponse(answer, headers={"CSP-Record-Count": str(entry["deleted"])})


@internal.get("/records")
async def replay_records(
    request: Request,
    claims: ClaimsDep,
    connection: ReadDep,
    dataset: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    provider: str | None = None,
) -> dict[str, Any]:
    """Current records of a dataset (optionally one provider's) as upsert events, for
    depersonalise to rebuild or reconcile from."""
    require_service(claims, operators=True)
    events, following = await asyncio.to_thread(
        app_state(request.app).relay.replay, connection, dataset, after, limit, provider
    )
    return {"events": events, "next": following}


@internal.get("/holdings")
async def dataset_holdings(claims: ClaimsDep, connection: ReadDep, dataset: str) -> dict[str, Any]:
    """Per provider: records held raw and a digest of their revisions (the reconciler's side)."""
    require_service(claims, operators=True)
    return await asyncio.to_thread(holdings, connection, dataset)


@internal.get("/purges")
async def purges_since(
    connection: ReadDep,
    claims: ClaimsDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    """Purge log entries after a cursor, oldest first: the gateway records each in its audit."""
    require_service(claims, operators=True)
    return {"purges": await asyncio.to_thread(purges_after, connection, after, limit)}
