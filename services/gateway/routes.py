"""The routes the gateway answers itself: keys, /v1/me, the audit trail and the API description.

Each translates HTTP to a call of ``key_issue``, ``keys`` or ``audit_queries`` and back, in the
request's one transaction (``deps.ConnectionDep``); agreements is asked over its client."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from services.gateway import audit_entries, audit_queries, key_issue, keys, oauth
from services.gateway.deps import (
    AdminDep,
    CallerDep,
    ConnectionDep,
    GatewayDep,
    SettingsDep,
    StreamConnectionDep,
)
from services.gateway.me import agreements_of, agreements_unavailable, me_answer
from services.gateway.schemas import (
    AccessToken,
    AuditPage,
    ChainCheck,
    CheckpointPage,
    ConsistencyProof,
    InclusionProof,
    KeyIssued,
    KeyRequest,
    TokenError,
)
from services.gateway.upstream import BackendTimeoutError, BackendUnavailableError, call_json
from shared.app import request_id
from shared.errors import ProblemError, problem_body
from shared.http import CSV_MEDIA, negotiate, neutralise

router = APIRouter(prefix="/v1", tags=["gateway"])
docs_router = APIRouter(include_in_schema=False)

CSV_COLUMNS = audit_entries.ENTRY_COLUMNS
# The audit's seq column is an INTEGER: 32-bit in PostgreSQL, so a larger cursor cannot exist.
MAX_SEQ = 2**31 - 1
# PostgreSQL text cannot hold NUL, so a filter with one is refused rather than failing the query.
NO_NUL = r"^[^\x00]*$"


async def _peer(coro: Any) -> tuple[int, Any]:
    try:
        return await coro
    except (BackendUnavailableError, BackendTimeoutError) as exc:
        raise agreements_unavailable() from exc


@router.get("/me")
async def me(caller: CallerDep, gateway: GatewayDep, request: Request) -> dict[str, Any]:
    """The caller's agency, roles, key id and the agreements it is party to."""
    return await me_answer(gateway, caller, request_id(request))


@router.post(
    "/oauth/token",
    response_model=AccessToken,
    responses={
        400: {
            "model": TokenError,
            "description": "invalid_request, unsupported_grant_type, invalid_scope",
        },
        401: {"model": TokenError, "description": "invalid_client"},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                            "scope": {"type": "string"},
                        },
                    }
                }
            }
        },
        "security": [],
    },
)
async def token(request: Request, gateway: GatewayDep) -> Response:
    """OAuth2 client credentials (RFC 6749 4.4): the client id is a key id, the secret its key,
    by HTTP Basic or in the form; ``scope`` (space-separated) narrows the key's scopes."""
    try:
        kind = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise oauth.OAuthError(
                400, "invalid_request", "The body must be application/x-www-form-urlencoded."
            )
        form = oauth.parse_form(await _limited_body(request, oauth.MAX_FORM_BYTES))
        if gateway.tokens is None:
            raise ProblemError(503, "Access tokens are not available.")
        granted = await oauth.grant(
            gateway.tokens, gateway.keys, request.headers.get("authorization"), form
        )
    except oauth.OAuthError as error:
        body = {
            "error": error.error,
            "error_description": error.description,
            **problem_body(error.status, error.description, slug=error.error.replace("_", "-")),
        }
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if error.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="csp-hub"'
        return JSONResponse(body, status_code=error.status, headers=headers)
    answer = AccessToken(
        access_token=granted.access_token, expires_in=granted.expires_in, scope=granted.scope
    )
    return JSONResponse(
        answer.model_dump(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def _limited_body(request: Request, limit: int) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise oauth.OAuthError(400, "invalid_request", "The form is too large.")
    return body


@router.post("/agencies/{code}/keys", status_code=201)
async def issue_key(
    code: str,
    _admin: AdminDep,
    gateway: GatewayDep,
    connection: ConnectionDep,
    body: KeyRequest | None = None,
) -> KeyIssued:
    """Issue a key for a registered agency; the key is shown only in this answer.

    No body (or ``{}``) gives every scope the agency may hold; ``admin`` is for operators only."""
    terms = key_issue.key_terms(code, body or KeyRequest())
    status, _ = await _peer(
        call_json(
            gateway.upstreams["agreements"],
            "GET",
            # The upstream sends paths as encoded: a code is any text the client sent.
            f"/internal/agencies/{quote(code, safe='')}",
            gateway.service_token(),
        )
    )
    if status == 404:
        raise ProblemError(
            404, f"No agency {code!r} is registered.", slug="agency-not-found", field="code"
        )
    if status != 200:
        raise ProblemError(
            503, "The agreements service could not answer.", slug="backend-unavailable"
        )
    return await asyncio.to_thread(key_issue.issue, connection, terms)


@router.delete("/agencies/{code}/keys/{key_id}", status_code=204)
async def revoke_key(
    code: str, key_id: str, _admin: AdminDep, gateway: GatewayDep, connection: ConnectionDep
) -> Response:
    """Revoke a key; every replica refuses it within a second."""
    if not await asyncio.to_thread(keys.revoke_key, connection, code, key_id):
        raise ProblemError(
            404,
            f"No active key {key_id!r} of agency {code!r}.",
            slug="key-not-found",
            field="key_id",
        )
    gateway.keys.forget(key_id)
    return Response(status_code=204)


@router.get(
    "/audit",
    response_model=None,
    responses={
        200: {
            "model": AuditPage,
            "description": "A page of entries; ?format=csv or Accept: text/csv for CSV",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def audit_trail(
    caller: CallerDep,
    gateway: GatewayDep,
    connection: ConnectionDep,
    request: Request,
    agency: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    dataset: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    outcome: Literal["allowed", "denied", "error", "pending"] | None = None,
    since: Annotated[str | None, Query(alias="from", max_length=32, pattern=NO_NUL)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=32, pattern=NO_NUL)] = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Literal["json", "csv"] | None = None,
) -> AuditPage | Response:
    """Operators see every entry; an agency sees every access to the data it provided."""
    viewer = None if caller.is_admin else caller.agency
    parties = set() if viewer is None else await agreements_of(gateway, caller, request_id(request))
    entries = await asyncio.to_thread(
        audit_queries.trail,
        connection,
        viewer,
        parties,
        agency=agency,
        dataset=dataset,
        outcome=outcome,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    if negotiate(format, request.headers.get("accept"), [("text/csv", "csv")], "json") == "csv":
        return Response(_csv(entries), media_type=CSV_MEDIA)
    next_cursor = entries[-1]["seq"] if len(entries) == limit else None
    return AuditPage.model_validate({"entries": entries, "next": next_cursor})


@router.get("/audit/verify")
async def verify_audit(
    _admin: AdminDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    connection: ConnectionDep,
    after: Annotated[int | None, Query(alias="from", ge=1, le=MAX_SEQ)] = None,
) -> ChainCheck:
    """Check the hash chain and its signed checkpoints (one at least every
    ``CSP_GATEWAY_AUDIT_CHECKPOINT_EVERY`` entries); name the first broken entry. ``from``, a
    checkpoint already verified, checks only what came after it."""
    check = await asyncio.to_thread(
        audit_queries.verify_store,
        connection,
        max_gap=settings.audit_checkpoint_every,
        trusted=gateway.audit_trusted,
        after=after,
    )
    return ChainCheck.model_validate(check)


@router.get("/audit/checkpoints")
async def audit_checkpoints(
    _caller: CallerDep,
    gateway: GatewayDep,
    connection: ConnectionDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    """Signed checkpoints after ``after``, and the public keys that verify them: an agency keeps
    them outside the hub (``csp audit witness``)."""
    found = await asyncio.to_thread(audit_queries.list_checkpoints, connection, after, limit)
    keys = gateway.audit_trusted
    if keys is None:
        keys = await asyncio.to_thread(audit_queries.public_keys, connection)
    following = found[-1]["seq"] if len(found) == limit else None
    return CheckpointPage.model_validate(
        {"checkpoints": found, "public_keys": keys, "next": following}
    )


@router.get("/audit/consistency")
async def audit_consistency(
    _caller: CallerDep,
    connection: ConnectionDep,
    first: Annotated[int, Query(alias="from", ge=0, le=MAX_SEQ)],
    second: Annotated[int, Query(alias="to", ge=1, le=MAX_SEQ)],
    digests: bool = True,
) -> ConsistencyProof:
    """The proof that the log at checkpoint ``to`` extends the log at checkpoint ``from``
    unchanged: ``proof``, the RFC 6962 consistency proof between their signed tree heads, and
    the digests in between (no entry content; ``digests=false`` leaves them out, and with them
    the bound on how far apart the checkpoints may be)."""
    proof = await asyncio.to_thread(
        audit_queries.consistency_answer, connection, first, second, digests
    )
    return ConsistencyProof.model_validate(proof)


@router.get("/audit/{seq}/proof")
async def audit_inclusion(
    _caller: CallerDep,
    connection: ConnectionDep,
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    size: Annotated[int, Query(ge=1, le=MAX_SEQ)],
) -> InclusionProof:
    """The RFC 6962 inclusion proof of entry ``seq`` in the tree signed at checkpoint ``size``:
    with the entry's digest, anyone holding that checkpoint can check the entry is in the log."""
    found = await asyncio.to_thread(audit_queries.inclusion_answer, connection, seq, size)
    return InclusionProof.model_validate(found)


@router.post("/audit/{seq}/redact")
async def redact_entry(
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)],
    admin: AdminDep,
    gateway: GatewayDep,
    connection: ConnectionDep,
) -> dict[str, Any]:
    """Erase an entry's body for an erasure request: its digest and the chain stay, and a new
    entry records the redaction (so the verifiers accept the entry by its digest)."""
    await asyncio.to_thread(audit_queries.check_redactable, connection, seq)
    # Recorded first: a redaction never happens unrecorded.
    await gateway.audit.append(audit_entries.redaction_entry(seq, admin.agency, admin.key_id))
    await asyncio.to_thread(audit_queries.redact, connection, seq)
    return {"seq": seq, "redacted": True}


@router.get("/audit/export", response_class=StreamingResponse)
async def export_audit(_admin: AdminDep, connection: StreamConnectionDep) -> StreamingResponse:
    """The whole chain as JSON lines, for ``scripts/verify_audit.py`` to check offline."""
    lines = (json.dumps(line) + "\n" for line in audit_queries.export_lines(connection))
    return StreamingResponse(iterate_in_threadpool(lines), media_type="application/x-ndjson")


def _csv(entries: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow([_cell(entry.get(column)) for column in CSV_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(neutralise(";".join(value) if isinstance(value, list) else str(value)))


@docs_router.get("/openapi.json")
async def openapi_document(gateway: GatewayDep) -> JSONResponse:
    if gateway.openapi is None:
        raise ProblemError(503, "The API description is not ready.")
    return JSONResponse(await gateway.openapi.document(gateway.service_token()))


@docs_router.get("/docs")
async def swagger(settings: SettingsDep) -> HTMLResponse:
    if not settings.expose_docs:
        raise ProblemError(404, "Not found.", slug="not-found")
    return get_swagger_ui_html(openapi_url="/openapi.json", title="CSP hub API")
