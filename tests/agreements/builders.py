"""Plain-data agreements for the domain tests, dated around a fixed moment."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.agreements.lifecycle import Agreement, DatasetGrant, Version

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
TODAY = NOW.date()
GRACE = 30


def day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


def version(
    number: int = 1,
    *,
    providers: tuple[str, ...] = ("gmp",),
    recipients: tuple[str, ...] = ("mcc",),
    grants: tuple[DatasetGrant, ...] = (DatasetGrant("police-crime", "depersonalised"),),
    purpose: str = "strategic-assessment",
    start: int = -30,
    end: int = 300,
    review: int | None = 100,
    signed: bool = True,
    agreement_id: str = "isa-1",
) -> Version:
    parties = tuple(dict.fromkeys(providers + recipients))
    signatures = {p: NOW - timedelta(days=40) for p in parties} if signed else {}
    return Version(
        agreement_id=agreement_id,
        version=number,
        title="t",
        purpose=purpose,
        providers=providers,
        recipients=recipients,
        datasets=grants,
        start=day(start),
        end=day(end),
        review_by=None if review is None else day(review),
        retention_days=90 + number,
        signatures=signatures,
    )


def agreement(*versions: Version, state: str = "none", agreement_id: str = "isa-1") -> Agreement:
    return Agreement(agreement_id, state, versions or (version(),))  # type: ignore[arg-type]
