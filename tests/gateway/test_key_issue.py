"""What a new key may hold, decided without HTTP: an agency's key never ``admin``, an expiry in
the future, a date meaning the whole of that day (UTC)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.gateway.key_issue import expiry, key_terms
from services.gateway.schemas import KeyRequest
from shared.errors import ProblemError

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()


def test_an_agency_key_may_not_hold_admin_but_an_operators_key_may() -> None:
    with pytest.raises(ProblemError) as refused:
        key_terms("gmp", KeyRequest(scopes=["read", "admin"]), NOW)
    assert refused.value.status == 422 and refused.value.extra["field"] == "scopes"
    assert key_terms("ops", KeyRequest(scopes=["admin"]), NOW).scopes == ["admin"]


def test_scopes_come_in_the_agencys_order_and_none_means_every_scope() -> None:
    assert key_terms("gmp", KeyRequest(scopes=["sign", "push"]), NOW).scopes == ["push", "sign"]
    assert key_terms("gmp", KeyRequest(), NOW).scopes is None


def test_an_expiry_must_lie_in_the_future_and_a_date_covers_its_whole_day() -> None:
    today = date(2026, 6, 1)
    terms = key_terms("gmp", KeyRequest(expires=today), NOW)
    assert terms.expires_at == datetime(2026, 6, 2, tzinfo=UTC).timestamp()
    with pytest.raises(ProblemError) as refused:
        key_terms("gmp", KeyRequest(expires=date(2026, 5, 31)), NOW)
    assert refused.value.extra["field"] == "expires"
    assert expiry(datetime(2026, 6, 1, 13)) == datetime(2026, 6, 1, 13, tzinfo=UTC).timestamp()


def test_an_expiry_out_of_range_is_refused_naming_the_field() -> None:
    with pytest.raises(ProblemError) as refused:
        key_terms("gmp", KeyRequest(expires=date.max), NOW)
    assert refused.value.status == 422 and refused.value.extra["field"] == "expires"
