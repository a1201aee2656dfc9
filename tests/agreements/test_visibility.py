"""Who sees which agency and agreement, decided without HTTP: operators and services see all, an
agency itself and what it is party to in any version; anyone else gets 404, never 403."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.agreements.lifecycle import Version
from services.agreements.service import StoredAgreement
from services.agreements.snapshot import AgencyInfo, Snapshot
from services.agreements.visibility import (
    agreements_seen,
    check_agency_visible,
    visible_agreement,
)
from shared.errors import ProblemError
from shared.tokens import InternalClaims
from tests.agreements.builders import NOW, agreement, version

OPERATOR = InternalClaims(sub="ops", roles=["agency", "admin"])
SERVICE = InternalClaims(sub="ingest", roles=["service"])
POLICE = InternalClaims(sub="gmp", roles=["agency"])
STRANGER = InternalClaims(sub="tvp", roles=["agency"])


def stored(*versions: Version, agreement_id: str = "isa-1") -> StoredAgreement:
    made = agreement(*versions, agreement_id=agreement_id)
    return StoredAgreement(made, {}, {}, datetime(2026, 1, 1, tzinfo=NOW.tzinfo))


def test_a_party_in_any_version_sees_the_agreement_and_a_stranger_gets_404() -> None:
    # The second version drops gmp: gmp was a party, so it still sees the agreement.
    held = stored(version(1), version(2, providers=("wmp",)))
    for claims in (OPERATOR, SERVICE, POLICE):
        assert visible_agreement(held, "isa-1", claims) is held
    with pytest.raises(ProblemError) as refused:
        visible_agreement(held, "isa-1", STRANGER)
    assert refused.value.status == 404 and refused.value.slug == "agreement-not-found"


def test_a_missing_agreement_is_404_even_for_operators() -> None:
    for claims in (None, OPERATOR):
        with pytest.raises(ProblemError) as refused:
            visible_agreement(None, "isa-9", claims)
        assert refused.value.status == 404


def test_an_agency_sees_only_itself_unless_it_is_an_operator_or_a_service() -> None:
    check_agency_visible(POLICE, "gmp")
    check_agency_visible(OPERATOR, "gmp")
    check_agency_visible(SERVICE, "gmp")
    with pytest.raises(ProblemError) as refused:
        check_agency_visible(STRANGER, "gmp")
    assert refused.value.status == 404 and refused.value.slug == "agency-not-found"


def test_the_agreements_listed_are_those_the_caller_is_party_to() -> None:
    first = stored(version(1), agreement_id="isa-1")
    second = stored(version(1, providers=("tvp",), recipients=("oxf",)), agreement_id="isa-2")
    snapshot = Snapshot(
        generation=1,
        agencies={"gmp": AgencyInfo("gmp", "GMP", "police", "active")},
        agreements={"isa-1": first, "isa-2": second},
        by_agency={"gmp": [first], "mcc": [first], "tvp": [second], "oxf": [second]},
    )
    assert agreements_seen(snapshot, OPERATOR) == [first, second]
    assert agreements_seen(snapshot, POLICE) == [first]
    assert agreements_seen(snapshot, InternalClaims(sub="nobody", roles=["agency"])) == []
