"""Who sees which agency and agreement: operators and peer services see everything; an agency
sees itself and the agreements it is party to (in any version). A caller who may not see an
agreement or agency learns nothing of it, not even that it exists: the answer is 404."""

from __future__ import annotations

from services.agreements.service import StoredAgreement
from services.agreements.snapshot import Snapshot
from shared.errors import ProblemError
from shared.tokens import InternalClaims


def sees_everything(claims: InternalClaims) -> bool:
    return claims.is_admin or claims.is_service


def check_agency_visible(claims: InternalClaims, code: str) -> None:
    if not (sees_everything(claims) or claims.sub == code):
        raise ProblemError(404, f"No agency {code!r}.", slug="agency-not-found")


def may_see(stored: StoredAgreement, claims: InternalClaims) -> bool:
    if sees_everything(claims):
        return True
    return any(claims.sub in v.parties for v in stored.agreement.versions)


def visible_agreement(
    stored: StoredAgreement | None, agreement_id: str, claims: InternalClaims | None = None
) -> StoredAgreement:
    """``stored`` if it exists and ``claims`` (None: an operator) may see it, else 404."""
    if stored is None or (claims is not None and not may_see(stored, claims)):
        raise ProblemError(404, f"No agreement {agreement_id!r}.", slug="agreement-not-found")
    return stored


def agreements_seen(snapshot: Snapshot, claims: InternalClaims) -> list[StoredAgreement]:
    """The agreements of the snapshot the caller sees, in id order."""
    if sees_everything(claims):
        return list(snapshot.agreements.values())
    return list(snapshot.by_agency.get(claims.sub, []))
