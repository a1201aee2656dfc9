"""The terms of a new agreement or version: checked against the code lists, the catalogue and the
agencies known, and normalised to the form stored (type and review date filled in)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from services.agreements.models import AgencyRow, AgreementCreate
from services.agreements.reference import CodeLists
from services.agreements.validation import check_terms
from shared.catalogue import Dataset
from shared.errors import ProblemError


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
