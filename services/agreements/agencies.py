"""Agencies held in the database: registered, listed, suspended and reinstated. Suspending or
reinstating a party writes a history row on every agreement that names it."""

from __future__ import annotations

from sqlmodel import Session, col, select

from services.agreements.change_log import bump_generation, record_history, utcnow
from services.agreements.models import AgencyRow, AgreementVersionRow
from shared.errors import ProblemError


def ensure_agency(session: Session, code: str, name: str, kind: str) -> None:
    if session.get(AgencyRow, code) is None:
        session.add(AgencyRow(code=code, name=name, kind=kind, created_at=utcnow()))
        bump_generation(session)


def create_agency(session: Session, code: str, name: str, kind: str) -> AgencyRow:
    if session.get(AgencyRow, code) is not None:
        raise ProblemError(
            409, f"An agency with code {code!r} exists.", slug="agency-exists", field="code"
        )
    row = AgencyRow(code=code, name=name, kind=kind, created_at=utcnow())
    session.add(row)
    bump_generation(session)
    return row


def get_agency(session: Session, code: str) -> AgencyRow:
    row = session.get(AgencyRow, code)
    if row is None:
        raise ProblemError(404, f"No agency {code!r}.", slug="agency-not-found")
    return row


def agencies_after(session: Session, after: str, limit: int) -> list[AgencyRow]:
    """Up to ``limit`` agencies whose code sorts after ``after``, in code order."""
    query = select(AgencyRow).where(col(AgencyRow.code) > after).order_by(col(AgencyRow.code))
    return list(session.exec(query.limit(limit)))


def set_agency_status(
    session: Session, code: str, status: str, protected: str, actor: str
) -> AgencyRow:
    row = get_agency(session, code)
    if status == "suspended" and code == protected:
        raise ProblemError(
            409, "The operators' agency cannot be suspended.", slug="agency-protected"
        )
    if row.status != status:
        row.status = status
        session.add(row)
        event = "party-suspended" if status == "suspended" else "party-reinstated"
        for agreement_id, version in _agreements_naming(session, code):
            record_history(session, agreement_id, version, actor, event, agency=code)
        bump_generation(session)
    return row


def _agreements_naming(session: Session, code: str) -> list[tuple[str, int]]:
    """Each agreement with a version naming ``code``, with its newest version number."""
    named: dict[str, int] = {}
    for v in session.exec(select(AgreementVersionRow)):
        if code in v.terms["providers"] or code in v.terms["recipients"]:
            named[v.agreement_id] = max(named.get(v.agreement_id, 0), v.version)
    return sorted(named.items())
