"""Agreements as plain data, and their status computed from dates, signatures and operator acts.

No FastAPI and no database here: the decision function, the routes and the tests all call these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from shared.levels import Level

OperatorState = Literal["none", "suspended", "revoked"]
OPERATOR_STATES: tuple[OperatorState, ...] = ("none", "suspended", "revoked")
Status = Literal["draft", "active", "expired", "suspended", "revoked", "superseded"]
ReviewState = Literal["current", "grace", "overdue"]


@dataclass(frozen=True)
class DatasetGrant:
    dataset: str
    level: Level
    fields: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Version:
    """One version of an agreement: its terms and who has signed it (agency -> aware time)."""

    agreement_id: str
    version: int
    title: str
    purpose: str
    providers: tuple[str, ...]
    recipients: tuple[str, ...]
    datasets: tuple[DatasetGrant, ...]
    start: date
    end: date
    review_by: date | None
    retention_days: int
    signatures: Mapping[str, datetime] = field(default_factory=dict)

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.providers + self.recipients))

    def grant(self, dataset: str) -> DatasetGrant | None:
        return next((g for g in self.datasets if g.dataset == dataset), None)

    def signed_by_all(self, now: datetime) -> bool:
        return all(
            party in self.signatures and self.signatures[party] <= now for party in self.parties
        )

    def role_of(self, agency: str) -> str | None:
        provider, recipient = agency in self.providers, agency in self.recipients
        if provider and recipient:
            return "both"
        return "provider" if provider else "recipient" if recipient else None


@dataclass(frozen=True)
class Agreement:
    id: str
    operator_state: OperatorState
    versions: tuple[Version, ...]  # ascending by version

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def version(self, number: int) -> Version | None:
        return next((v for v in self.versions if v.version == number), None)


def operator_state_of(value: str) -> OperatorState:
    """A stored operator state as the lifecycle takes it (ValueError for any other)."""
    for state in OPERATOR_STATES:
        if value == state:
            return state
    raise ValueError(f"unknown operator state {value!r}")


def in_force(agreement: Agreement, now: datetime) -> Version | None:
    """The newest version signed by every party whose start date has come (it may have expired)."""
    today = now.date()
    for version in reversed(agreement.versions):
        if version.signed_by_all(now) and version.start <= today:
            return version
    return None


def governing(agreement: Agreement, now: datetime) -> Version:
    """The version that decides requests now: the one in force, else the newest draft."""
    return in_force(agreement, now) or agreement.latest


def version_status(agreement: Agreement, version: Version, now: datetime) -> Status:
    if agreement.operator_state == "revoked":
        return "revoked"
    current = in_force(agreement, now)
    if current is not None and version.version < current.version:
        return "superseded"
    if agreement.operator_state == "suspended":
        return "suspended"
    if current is None or version.version > current.version:
        return "draft"
    if now.date() > version.end:
        return "expired"
    return "active"


def status(agreement: Agreement, now: datetime) -> Status:
    """The agreement's status: that of the version that decides requests."""
    return version_status(agreement, governing(agreement, now), now)


def review_state(version: Version, today: date, grace_days: int) -> ReviewState:
    if version.review_by is None or today <= version.review_by:
        return "current"
    if today <= version.review_by + timedelta(days=grace_days):
        return "grace"
    return "overdue"


def grace_until(version: Version, grace_days: int) -> date | None:
    if version.review_by is None:
        return None
    return version.review_by + timedelta(days=grace_days)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
