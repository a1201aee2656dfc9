"""Agreements held in the database: read as plain data (``StoredAgreement``), and every change to
one (created, amended, signed, suspended, reinstated, revoked), each writing its history row and
bumping the generation counter in the request's transaction (``change_log``). Agencies are in
``agencies``, the checking of terms in ``agreement_terms``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.agreements.change_log import bump_generation, record_history, utcnow
from services.agreements.lifecycle import Agreement, DatasetGrant, Version, operator_state_of
from services.agreements.models import (
    AgencyRow,
    AgreementRow,
    AgreementVersionRow,
    SignatureRow,
)
from shared.errors import ProblemError


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


# ---------------------------------------------------------------- changes


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
    record_history(session, agreement_id, 1, actor, "created", title=terms["title"])
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
    record_history(
        session, agreement_id, row.latest_version, actor, "amended", title=terms["title"]
    )
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
    record_history(session, agreement.id, latest.version, agency, "signed", signatory=signatory)
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
    record_history(session, agreement_id, row.latest_version, actor, event)
    bump_generation(session)
