"""HTTP for the case view: a cohort's members, a search by identifier, one person's records.

The gateway decides each at level ``personal`` (the member list on ``offender-cohort``, the
people routes on every person dataset, forwarded as ``dataset_grants``) and requires
``CSP-Reason``, which it keeps in the audit entry; ingest records each read beside the others.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from services.ingest import people
from services.ingest.deps import ReadDep, app_state
from services.ingest.personal_reads import record_read
from shared.app import request_id
from shared.catalogue import load_catalogue
from shared.deps import ClaimsDep
from shared.errors import ProblemError
from shared.grants import Slices, slices, slices_of
from shared.identifiers import parse_cro, parse_nhs, parse_pnc
from shared.tokens import InternalClaims

case_view = APIRouter(prefix="/v1", tags=["case view"])
NO_STORE = {"Cache-Control": "no-store"}
SEARCHABLE = {
    "pnc_id": ("pnc", parse_pnc),
    "cro_number": ("cro", parse_cro),
    "nhs_number": (
        "nhs",
        parse_nhs,
    ),
}


def _key(request: Request) -> str:
    config = app_state(request.app).linkage
    if config is None:
        raise ProblemError(
            409, "Linkage is off: ingest has no CSP_INGEST_LINKAGE_KEY.", slug="linkage-off"
        )
    return str(config.key)


def _personal(claims: InternalClaims) -> None:
    if claims.level != "personal" or claims.action != "read":
        raise ProblemError(
            403, "No agreement allows a personal-level read.", rule="level-not-agreed"
        )


def _scopes(claims: InternalClaims) -> dict[str, Slices]:
    _personal(claims)
    if not claims.dataset_grants:
        raise ProblemError(
            403, "No agreement allows a personal-level read.", rule="level-not-agreed"
        )
    return {dataset: slices_of(grants) for dataset, grants in claims.dataset_grants.items()}


async def _record(
    request: Request, connection: Connection, claims: InternalClaims, dataset: str, served: int
) -> None:
    await asyncio.to_thread(
        record_read,
        connection,
        agency=claims.sub,
        dataset=dataset,
        agreement=claims.agreement,
        version=claims.version,
        purpose=claims.purpose,
        records=served,
        request_id=request_id(request) or None,
    )


@case_view.get("/cohorts/{strand}/members")
async def cohort_members(
    strand: str, request: Request, claims: ClaimsDep, connection: ReadDep
) -> JSONResponse:
    """The strand's members as handles issued to the caller, with joining and leaving dates."""
    _personal(claims)
    key = _key(request)
    members = await asyncio.to_thread(
        people.cohort_members, connection, key, claims.sub, strand, slices(claims)
    )
    if members is None:
        raise ProblemError(404, f"No cohort {strand!r}.", slug="unknown-cohort", field="strand")
    await _record(request, connection, claims, people.COHORT_DATASET, len(members))
    body = {"cohort": strand, "level": "personal", "count": len(members), "members": members}
    return JSONResponse(body, headers=NO_STORE)


@case_view.get("/people")
async def search_people(request: Request, claims: ClaimsDep, connection: ReadDep) -> JSONResponse:
    """Handles of the people the caller may read whose records carry an identifier it holds:
    ``?pnc_id=``, ``?cro_number=`` or ``?nhs_number=`` (in any written form)."""
    scopes = _scopes(claims)
    key = _key(request)
    given = [name for name in SEARCHABLE if request.query_params.get(name)]
    if len(given) != 1:
        raise ProblemError(
            422,
            "Search by exactly one of pnc_id, cro_number, nhs_number.",
            slug="search-identifier",
            field="pnc_id",
        )
    name = given[0]
    column, parse = SEARCHABLE[name]
    try:
        value = parse(request.query_params[name])
    except ValueError as exc:
        raise ProblemError(422, f"{name}: {exc}", slug="invalid-identifier", field=name) from exc
    handles = await asyncio.to_thread(
        people.search, connection, key, claims.sub, column, value, scopes
    )
    return JSONResponse({"people": [{"person": h} for h in handles]}, headers=NO_STORE)


@case_view.get("/people/{person}")
async def read_person(
    person: str, request: Request, claims: ClaimsDep, connection: ReadDep
) -> JSONResponse:
    """One person's linked records from every provider whose grant allows it, each record as
    that provider's grant shows it."""
    scopes = _scopes(claims)
    key = _key(request)
    found = await asyncio.to_thread(people.resolve, connection, key, claims.sub, person, scopes)
    if found is None:
        raise ProblemError(404, "No such person.", slug="unknown-person", field="person")
    catalogue = load_catalogue(request.app.state.settings.catalogue_dir)
    records = await asyncio.to_thread(people.person_records, connection, found, catalogue, scopes)
    for dataset, rows in records.items():
        await _record(request, connection, claims, dataset, len(rows))
    body = {
        "person": person,
        "level": "personal",
        "agreement": claims.agreement,
        "records": records,
    }
    return JSONResponse(body, headers=NO_STORE)
