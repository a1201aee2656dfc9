"""Agencies and agreements held in the database: reading them as plain data, and every change.

Each change writes its history row and bumps the generation counter in the request's transaction,
so every replica's decision snapshot reloads on its next decision.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.agreements.lifecycle import Agreement, DatasetGrant, Version, operator_state_of
from services.agreements.models import (
    AgencyRow,
    AgreementCreate,
    AgreementRow,
    AgreementVersionRow,
    GenerationRow,
    HistoryRow,
    SignatureRow,
)
from services.agreements.reference import CodeLists
from services.agreements.validation import check_terms
from shared.catalogue import Dataset
from shared.errors import ProblemError


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Signed:
    signatory: str
    signed_at: datetime


@dataclass(frozen=True)
class StoredAgreement:
    """An agreement as held: the plain-data view for decisions plus what only the record shows."""

    agreement: Agreement
    terms: Mapping[int, Mapping[str, Any]]
    signatures: Mapping[int, Mapping[str, Signed]]
    created_at: datetime


# ---------------------------------------------------------------- reading


def version_from_terms(
    agreement_id: str, number: int, terms: Mapping[str, Any], signed: Mapping[str, Signed]
) -> Version:
    return Version(
        agreement_id=agreement_id,
        version=number,
        title=terms["title"],
        purpose=terms["purpose"],
        providers=tuple(terms["providers"]),
        recipients=tuple(terms["recipients"]),
        datasets=tuple(
            DatasetGrant(
                dataset=entry["dataset"],
                level=entry["level"],
                fields=None if entry.get("fields") is None else tuple(entry["fields"]),
            )
            for entry in terms["datasets"]
        ),
        start=date.fromisoformat(terms["start"]),
        end=date.fromisoformat(terms["end"]),
        review_by=date.fromisoformat(terms["review_by"]) if terms.get("review_by") else None,
        retention_days=int(terms["retention_days"]),
        signatures={agency: s.signed_at for agency, s in signed.items()},
    )


def _assemble(
    row: AgreementRow,
    versions: list[AgreementVersionRow],
    signatures: list[SignatureRow],
) -> StoredAgreement:
    signed: dict[int, dict[str, Signed]] = {v.version: {} for v in versions}
    for s in signatures:
        signed.setdefault(s.version, {})[s.agency] = Signed(s.signatory, s.signed_at)
    ordered = sorted(versions, key=lambda v: v.version)
    domain = Agreement(
        id=row.id,
        operator_state=operator_state_of(row.operator_state),
        versions=tuple(
            version_from_terms(row.id, v.version, v.terms, signed[v.version]) for v in ordered
        ),
    )
    return StoredAgreement(
        agreement=domain,
        terms={v.version: v.terms for v in ordered},
        signatures=signed,
        created_at=row.created_at,
    )


def read_agreement(session: Session, agreement_id: str) -> StoredAgreement | None:
    row = session.get(AgreementRow, agreement_id)
    if row is None:
        return None
    versions = list(
        session.exec(
            select(AgreementVersionRow).where(AgreementVersionRow.agreement_id == agreement_id)
        )
    )
    signatures = list(
        session.exec(select(SignatureRow).where(SignatureRow.agreement_id == agreement_id))
    )
    return _assemble(row, versions, signatures)


def read_all(session: Session) -> tuple[list[AgencyRow], list[StoredAgreement]]:
    agencies = list(session.exec(select(AgencyRow)))
    rows = list(session.exec(select(AgreementRow)))
    versions: dict[str, list[AgreementVersionRow]] = {}
    for v in session.exec(select(AgreementVersionRow)):
        versions.setdefault(v.agreement_id, []).append(v)
    signatures: dict[str, list[SignatureRow]] = {}
    for s in session.exec(select(SignatureRow)):
        signatures.setdefault(s.agreement_id, []).append(s)
    stored = [
        _assemble(row, versions.get(row.id, []), signatures.get(row.id, []))
        for row in rows
        if versions.get(row.id)
    ]
    return agencies, stored


def read_generation(engine: Engine) -> int:
    with Session(engine) as session:
        row = session.get(GenerationRow, 1)
        return row.value if row else 0


# ---------------------------------------------------------------- changes


def bump_generation(session: Session) -> None:
    result = session.exec(
        update(GenerationRow)
        .where(col(GenerationRow.id) == 1)
        .values(value=GenerationRow.value + 1)
    )
    if result.rowcount == 0:
        session.add(GenerationRow(id=1, value=1))
    session.flush()


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
            _history(session, agreement_id, version, actor, event, agency=code)
        bump_generation(session)
    return row


def _agreements_naming(session: Session, code: str) -> list[tuple[str, int]]:
    """Each agreement with a version naming ``code``, with its newest version number."""
    named: dict[str, int] = {}
    for v in session.exec(select(AgreementVersionRow)):
        if code in v.terms["providers"] or code in v.terms["recipients"]:
            named[v.agreement_id] = max(named.get(v.agreement_id, 0), v.version)
    return sorted(named.items())


def _history(
    session: Session, agreement_id: str, version: int, actor: str, event: str, **detail: Any
) -> None:
    session.add(
        HistoryRow(
            agreement_id=agreement_id,
            version=version,
            at=utcnow(),
            actor=actor,
            event=event,
            detail=detail,
        )
    )


def normalise_terms(body: AgreementCreate) -> dict[str, Any]:
    """The terms as stored: JSON-ready, with the type and review date filled in when absent."""
    terms = body.model_dump(mode="json", exclude={"days"})
    if terms["type"] is None:
        reciprocal = set(body.providers) == set(body.recipients)
        terms["type"] = "reciprocal" if reciprocal else "one-way"
    if terms["review_by"] is None:
        # ICO code: review regularly; a year after the start unless the agreement ends sooner.
        terms["review_by"] = min(body.start + timedelta(days=365), body.end).isoformat()
    return terms


def validate(
    session: Session,
    body: AgreementCreate,
    codes: CodeLists,
    catalogue: Mapping[str, Dataset],
) -> dict[str, Any]:
    named = set(body.providers) | set(body.recipients)
    known = set(session.exec(select(AgencyRow.code).where(col(AgencyRow.code).in_(named))))
    errors = check_terms(
        {**body.model_dump(), "datasets": [d.model_dump() for d in body.datasets]},
        codes,
        catalogue,
        known,
    )
    if errors:
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        raise ProblemError(
            422,
            f"The agreement is not valid: {fields}.",
            slug="agreement-invalid",
            title="Validation failed",
            field=errors[0]["field"],
            errors=errors,
        )
    return normalise_terms(body)


def new_agreement_id() -> str:
    # Time-ordered so that cursor pages list agreements in the order they were made.
    return f"isa-{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def create_agreement(session: Session, terms: dict[str, Any], actor: str) -> str:
    agreement_id = new_agreement_id()
    now = utcnow()
    session.add(AgreementRow(id=agreement_id, latest_version=1, created_at=now))
    session.flush()
    session.add(
        AgreementVersionRow(
            agreement_id=agreement_id, version=1, terms=terms, created_at=now, created_by=actor
        )
    )
    _history(session, agreement_id, 1, actor, "created", title=terms["title"])
    bump_generation(session)
    return agreement_id


def _row(session: Session, agreement_id: str, *, lock: bool = False) -> AgreementRow:
    statement = select(AgreementRow).where(AgreementRow.id == agreement_id)
    if lock:
        statement = statement.with_for_update()
    row = session.exec(statement).first()
    if row is None:
        raise ProblemError(404, f"No agreement {agreement_id!r}.", slug="agreement-not-found")
    return row


def amend_agreement(session: Session, agreement_id: str, terms: dict[str, Any], actor: str) -> int:
    row = _row(session, agreement_id, lock=True)
    if row.operator_state == "revoked":
        raise ProblemError(409, "A revoked agreement cannot change.", slug="agreement-revoked")
    row.latest_version += 1
    session.add(row)
    session.add(
        AgreementVersionRow(
            agreement_id=agreement_id,
            version=row.latest_version,
            terms=terms,
            created_at=utcnow(),
            created_by=actor,
        )
    )
    _history(session, agreement_id, row.latest_version, actor, "amended", title=terms["title"])
    bump_generation(session)
    return row.latest_version


def sign_agreement(session: Session, stored: StoredAgreement, agency: str, signatory: str) -> bool:
    """Sign the newest version for ``agency``; False when it had already signed (no change)."""
    agreement = stored.agreement
    latest = agreement.latest
    if agreement.operator_state == "revoked":
        raise ProblemError(409, "A revoked agreement cannot be signed.", slug="agreement-revoked")
    if agency not in latest.parties:
        raise ProblemError(
            403,
            "Only a party to this version of the agreement may sign it.",
            slug="not-a-party",
            rule="not-a-party",
        )
    if agency in stored.signatures.get(latest.version, {}):
        return False
    try:
        # A savepoint: a concurrent second signature by the same party is a no-op, not a 500.
        with session.begin_nested():
            session.add(
                SignatureRow(
                    agreement_id=agreement.id,
                    version=latest.version,
                    agency=agency,
                    signatory=signatory,
                    signed_at=utcnow(),
                )
            )
    except IntegrityError:
        return False
    _history(session, agreement.id, latest.version, agency, "signed", signatory=signatory)
    bump_generation(session)
    return True


_TRANSITIONS = {
    "suspend": ({"none", "suspended"}, "suspended", "suspended"),
    "reinstate": ({"none", "suspended"}, "none", "reinstated"),
    "revoke": ({"none", "suspended", "revoked"}, "revoked", "revoked"),
}


def operator_act(session: Session, agreement_id: str, act: str, actor: str) -> None:
    """Suspend, reinstate or revoke; repeating an act changes nothing, revoke is final."""
    allowed_from, target, event = _TRANSITIONS[act]
    row = _row(session, agreement_id, lock=True)
    if row.operator_state not in allowed_from:
        raise ProblemError(409, "A revoked agreement cannot be changed.", slug="agreement-revoked")
    if row.operator_state == target:
        return
    row.operator_state = target
    session.add(row)
    _history(session, agreement_id, row.latest_version, actor, event)
    bump_generation(session)


def revocation_days(session: Session, agreement_ids: list[str]) -> dict[str, date]:
    """The day each of these agreements was revoked (from its history)."""
    if not agreement_ids:
        return {}
    rows = session.exec(
        select(HistoryRow.agreement_id, HistoryRow.at).where(
            col(HistoryRow.agreement_id).in_(agreement_ids), HistoryRow.event == "revoked"
        )
    )
    return {agreement_id: at.date() for agreement_id, at in rows}


def history(
    session: Session, agreement_id: str, after: int, limit: int
) -> tuple[list[HistoryRow], int | None]:
    rows = list(
        session.exec(
            select(HistoryRow)
            .where(HistoryRow.agreement_id == agreement_id, col(HistoryRow.id) > after)
            .order_by(col(HistoryRow.id))
            .limit(limit + 1)
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)
