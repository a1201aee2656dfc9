"""HTTP routes: each translates a request into calls of the domain and service modules.

Who sees what is ``visibility``; the decision answered and logged is ``decision_answer``; the
store is ``service`` in the request's one session (``deps.SessionDep``, committed before the
answer leaves)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from services.agreements import agencies as agency_store
from services.agreements import agreement_terms, service
from services.agreements.change_log import history, utcnow
from services.agreements.decision_answer import decided, decision_request, own_view
from services.agreements.decision_log import usage
from services.agreements.deps import CallerDep, RuntimeDep, ServiceDep, SessionDep, SettingsDep
from services.agreements.dry_run import dry_run as dry_run_report
from services.agreements.lifecycle import iso_utc
from services.agreements.models import (
    AgencyCreate,
    AgencyPublic,
    AgencyRow,
    AgreementCreate,
    DecisionPublic,
    DecisionQuery,
    DryRunBody,
    InternalDecisionQuery,
    Page,
    SignBody,
)
from services.agreements.retention import retention_in_force
from services.agreements.views import (
    agreement_view,
    register_csv,
    register_html,
    register_rows,
    report_entry,
)
from services.agreements.visibility import (
    agreements_seen,
    check_agency_visible,
    visible_agreement,
)
from shared.deps import AdminDep, ClaimsDep
from shared.errors import ProblemError
from shared.http import CSV_MEDIA, decode_cursor, encode_cursor, negotiate

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200)]


def _page(items: Sequence[tuple[str, dict[str, Any]]], limit: int) -> Page:
    """Items are ``(key, item)`` in key order, already after the cursor; one more than asked."""
    shown = list(items[:limit])
    more = len(items) > limit
    return Page(
        items=[item for _, item in shown],
        next_cursor=encode_cursor(shown[-1][0]) if more and shown else None,
    )


def _agency_public(row: AgencyRow) -> AgencyPublic:
    return AgencyPublic(code=row.code, name=row.name, kind=row.kind, status=row.status)


# ---------------------------------------------------------------- agencies

agencies = APIRouter(prefix="/v1/agencies", tags=["agencies"])


@agencies.post("", status_code=201)
def create_agency(body: AgencyCreate, session: SessionDep, _admin: AdminDep) -> AgencyPublic:
    return _agency_public(agency_store.create_agency(session, body.code, body.name, body.kind))


@agencies.get("")
def list_agencies(
    session: SessionDep, _admin: AdminDep, cursor: Cursor = None, limit: Limit = 50
) -> Page:
    rows = agency_store.agencies_after(session, decode_cursor(cursor), limit + 1)
    return _page([(r.code, _agency_public(r).model_dump()) for r in rows], limit)


@agencies.get("/{code}")
def get_agency(code: str, session: SessionDep, claims: ClaimsDep) -> AgencyPublic:
    check_agency_visible(claims, code)
    return _agency_public(agency_store.get_agency(session, code))


@agencies.post("/{code}/suspend")
def suspend_agency(
    code: str, session: SessionDep, settings: SettingsDep, admin: AdminDep
) -> AgencyPublic:
    row = agency_store.set_agency_status(session, code, "suspended", settings.ops_agency, admin.sub)
    return _agency_public(row)


@agencies.post("/{code}/reinstate")
def reinstate_agency(
    code: str, session: SessionDep, settings: SettingsDep, admin: AdminDep
) -> AgencyPublic:
    row = agency_store.set_agency_status(session, code, "active", settings.ops_agency, admin.sub)
    return _agency_public(row)


# ---------------------------------------------------------------- code lists

reference = APIRouter(prefix="/v1", tags=["reference"])


@reference.get("/purposes")
def list_purposes(runtime: RuntimeDep, _claims: ClaimsDep) -> list[dict[str, Any]]:
    return [vars(p) for p in runtime.codes.purposes.values()]


@reference.get("/legal-bases")
def list_legal_bases(runtime: RuntimeDep, _claims: ClaimsDep) -> list[dict[str, Any]]:
    return [vars(b) for b in runtime.codes.legal_bases.values()]


# ---------------------------------------------------------------- agreements

agreements = APIRouter(prefix="/v1/agreements", tags=["agreements"])


def _view(session: SessionDep, agreement_id: str, settings: SettingsDep) -> dict[str, Any]:
    stored = visible_agreement(service.read_agreement(session, agreement_id), agreement_id)
    return agreement_view(stored, utcnow(), settings.review_grace_days)


@agreements.post("", status_code=201)
def create_agreement(
    body: AgreementCreate,
    session: SessionDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> dict[str, Any]:
    terms = agreement_terms.validate(session, body, runtime.codes, runtime.catalogue)
    agreement_id = service.create_agreement(session, terms, admin.sub)
    return _view(session, agreement_id, settings)


@agreements.get("")
def list_agreements(
    settings: SettingsDep,
    runtime: RuntimeDep,
    claims: ClaimsDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page:
    after = decode_cursor(cursor)
    pool = agreements_seen(runtime.snapshots.current(), claims)
    now = utcnow()
    chosen = [s for s in pool if s.agreement.id > after][: limit + 1]
    return _page(
        [(s.agreement.id, agreement_view(s, now, settings.review_grace_days)) for s in chosen],
        limit,
    )


RegisterFormat = Literal["csv", "html", "json"]
# The register is a document: CSV unless the caller asks for a page or JSON.
REGISTER_FORMATS = [("text/html", "html"), ("text/csv", "csv"), ("application/json", "json")]


@agreements.get("/register", response_model=None)
def agreement_register(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    claims: ClaimsDep,
    format: Annotated[RegisterFormat | None, Query()] = None,
) -> Response | dict[str, Any]:
    runtime.recorder.flush()
    pool = agreements_seen(runtime.snapshots.current(), claims)
    now = utcnow()
    rows = register_rows(pool, usage(session), now, settings.review_grace_days)
    chosen = negotiate(format, request.headers.get("accept"), REGISTER_FORMATS, "csv")
    if chosen == "html":
        return HTMLResponse(register_html(rows, now))
    if chosen == "json":
        return {"items": rows}
    return PlainTextResponse(
        register_csv(rows),
        media_type=CSV_MEDIA,
        headers={"Content-Disposition": 'attachment; filename="agreements-register.csv"'},
    )


@agreements.get("/{agreement_id}")
def get_agreement(
    agreement_id: str,
    session: SessionDep,
    settings: SettingsDep,
    claims: ClaimsDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    stored = visible_agreement(service.read_agreement(session, agreement_id), agreement_id, claims)
    shown = None
    if version is not None:
        shown = stored.agreement.version(version)
        if shown is None:
            raise ProblemError(
                404,
                f"Agreement {agreement_id!r} has no version {version}.",
                slug="version-not-found",
            )
    return agreement_view(stored, utcnow(), settings.review_grace_days, shown)


@agreements.put("/{agreement_id}")
def amend_agreement(
    agreement_id: str,
    body: AgreementCreate,
    session: SessionDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> dict[str, Any]:
    terms = agreement_terms.validate(session, body, runtime.codes, runtime.catalogue)
    number = service.amend_agreement(session, agreement_id, terms, admin.sub)
    stored = visible_agreement(service.read_agreement(session, agreement_id), agreement_id)
    return agreement_view(
        stored, utcnow(), settings.review_grace_days, stored.agreement.version(number)
    )


@agreements.post("/{agreement_id}/sign")
def sign_agreement(
    agreement_id: str,
    session: SessionDep,
    settings: SettingsDep,
    claims: ClaimsDep,
    body: Annotated[SignBody | None, Body()] = None,
) -> dict[str, Any]:
    stored = visible_agreement(service.read_agreement(session, agreement_id), agreement_id)
    signatory = (body.signatory if body else None) or f"{claims.sub} (key {claims.key_id or '-'})"
    # A caller not party to the version being signed is refused (403), as the contract asks.
    service.sign_agreement(session, stored, claims.sub, signatory)
    stored = visible_agreement(service.read_agreement(session, agreement_id), agreement_id, claims)
    return agreement_view(stored, utcnow(), settings.review_grace_days, stored.agreement.latest)


def _operator_route(act: str) -> Any:
    def act_on(
        agreement_id: str, session: SessionDep, settings: SettingsDep, admin: AdminDep
    ) -> dict[str, Any]:
        service.operator_act(session, agreement_id, act, admin.sub)
        return _view(session, agreement_id, settings)

    act_on.__name__ = f"{act}_agreement"
    return act_on


for _act in ("suspend", "reinstate", "revoke"):
    agreements.post(f"/{{agreement_id}}/{_act}", name=f"{_act}_agreement")(_operator_route(_act))


@agreements.get("/{agreement_id}/history")
def agreement_history(
    agreement_id: str,
    session: SessionDep,
    claims: ClaimsDep,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page:
    visible_agreement(service.read_agreement(session, agreement_id), agreement_id, claims)
    after = decode_cursor(cursor)
    start = int(after) if after.isdigit() else 0
    rows, next_id = history(session, agreement_id, start, limit)
    return Page(
        items=[
            {
                "at": iso_utc(r.at),
                "version": r.version,
                "event": r.event,
                "actor": r.actor,
                "detail": r.detail,
            }
            for r in rows
        ],
        next_cursor=encode_cursor(str(next_id)) if next_id is not None else None,
    )


@agreements.post("/{agreement_id}/dry-run")
def dry_run(
    agreement_id: str,
    body: DryRunBody,
    session: SessionDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    admin: AdminDep,
) -> dict[str, Any]:
    stored = visible_agreement(service.read_agreement(session, agreement_id), agreement_id)
    return dry_run_report(session, runtime, stored, body, settings.review_grace_days)


# ---------------------------------------------------------------- decisions and the caller

decisions = APIRouter(prefix="/v1", tags=["decisions"])


@decisions.post("/decisions")
async def explain_decision(
    body: DecisionQuery, settings: SettingsDep, runtime: RuntimeDep, claims: CallerDep
) -> DecisionPublic:
    request = decision_request(claims.sub, body)
    return await decided(runtime, request, settings.review_grace_days, explain=True)


@decisions.get("/me")
async def me(settings: SettingsDep, runtime: RuntimeDep, claims: CallerDep) -> dict[str, Any]:
    return await own_view(runtime, claims.sub, settings.review_grace_days)


# ---------------------------------------------------------------- internal

internal = APIRouter(prefix="/internal", tags=["internal"])


@internal.post("/decisions")
async def internal_decision(
    body: InternalDecisionQuery, settings: SettingsDep, runtime: RuntimeDep, _caller: ServiceDep
) -> DecisionPublic:
    request = decision_request(body.agency, body)
    return await decided(runtime, request, settings.review_grace_days, explain=False)


@internal.get("/agencies/{code}")
def internal_agency(code: str, runtime: RuntimeDep, _caller: ServiceDep) -> dict[str, str]:
    agency = runtime.snapshots.current().agencies.get(code)
    if agency is None:
        raise ProblemError(404, f"No agency {code!r}.", slug="agency-not-found")
    return agency.public()


@internal.get("/retention")
def internal_retention(
    runtime: RuntimeDep, session: SessionDep, _caller: ServiceDep
) -> list[dict[str, Any]]:
    return retention_in_force(session, runtime.snapshots.current().agreements.values(), utcnow())


@internal.get("/agreements")
def internal_agreements(
    settings: SettingsDep,
    runtime: RuntimeDep,
    _caller: ServiceDep,
    agency: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    """Every agreement (or those ``agency`` is party to) for the partnership report."""
    snapshot = runtime.snapshots.current()
    pool = snapshot.agreements.values() if agency is None else snapshot.by_agency.get(agency, [])
    now = utcnow()
    return [report_entry(s, now, settings.review_grace_days) for s in pool]


# The gateway's decision call is matched first: it comes on every proxied request.
routers = (internal, decisions, agencies, reference, agreements)
