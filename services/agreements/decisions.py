"""The decision function: may this agency do this to this dataset now, under which agreement?

Plain data in, plain data out. Default deny; an explicit refusal (the agency is suspended) wins over
any permission. Each candidate agreement is checked in a fixed order — role, purpose, level, fields,
then its status — and when nothing allows, the refusal that got furthest is reported, so the rule
names the most specific reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from services.agreements.lifecycle import (
    Agreement,
    Version,
    grace_until,
    in_force,
    review_state,
)
from shared.levels import LEVEL_RANK

Action = Literal["push", "read", "retract"]
AgencyStatus = Literal["active", "suspended"]
ACTIONS: tuple[Action, ...] = ("push", "read", "retract")
AGENCY_STATUSES: tuple[AgencyStatus, ...] = ("active", "suspended")


def action_of(value: str) -> Action:
    """A stored action name as the decision function takes it (ValueError for any other)."""
    for action in ACTIONS:
        if value == action:
            return action
    raise ValueError(f"unknown action {value!r}")


def agency_status_of(value: str) -> AgencyStatus:
    """A stored agency status as the decision function takes it (ValueError for any other)."""
    for status in AGENCY_STATUSES:
        if value == status:
            return status
    raise ValueError(f"unknown agency status {value!r}")


DEFAULT_READ_LEVEL = "depersonalised"

RULES = (
    "no-active-agreement",
    "not-a-provider",
    "not-a-recipient",
    "level-exceeds-agreement",
    "field-not-agreed",
    "purpose-not-agreed",
    "agreement-expired",
    "agreement-not-started",
    "agreement-suspended",
    "agreement-revoked",
    "review-overdue",
    "agency-suspended",
    "allowed",
)

# How far a candidate got before it refused: the furthest refusal explains the denial best.
_STAGE_ROLE, _STAGE_PURPOSE, _STAGE_LEVEL, _STAGE_FIELDS, _STAGE_STATUS = range(5)


@dataclass(frozen=True)
class AgencyFacts:
    code: str
    status: AgencyStatus = "active"


@dataclass(frozen=True)
class DecisionRequest:
    agency: str
    action: Action
    dataset: str
    level: str | None = None
    purpose: str | None = None
    fields: tuple[str, ...] | None = None

    @property
    def wanted_level(self) -> str:
        return self.level or DEFAULT_READ_LEVEL


@dataclass(frozen=True)
class Grant:
    """What one provider's records may show one recipient under one agreement version."""

    provider: str
    agreement: str
    version: int
    level: str
    fields: list[str] | None
    start: str
    end: str
    purpose: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "agreement": self.agreement,
            "version": self.version,
            "level": self.level,
            "fields": self.fields,
            "from": self.start,
            "to": self.end,
            "purpose": self.purpose,
        }


@dataclass(frozen=True)
class Decision:
    allow: bool
    rule: str
    agreement: str | None = None
    version: int | None = None
    fields: list[str] | None = None
    providers: list[str] | None = None
    purpose: str | None = None
    retention_days: int | None = None
    window: list[str] | None = None
    warning: str | None = None
    grants: tuple[Grant, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        # Shallow on purpose: asdict() deep-copies, which shows on the per-request path.
        answer = {name: getattr(self, name) for name in _DECISION_FIELDS}
        answer["grants"] = [grant.as_dict() for grant in self.grants]
        return answer


_DECISION_FIELDS = tuple(f.name for f in fields(Decision) if f.name != "grants")


@dataclass(frozen=True)
class _Refusal:
    stage: int
    rule: str
    agreement: str | None
    version: int | None


def _deny(request: DecisionRequest, refusal: _Refusal) -> Decision:
    return Decision(
        allow=False,
        rule=refusal.rule,
        agreement=refusal.agreement,
        version=refusal.version,
        fields=[],
        providers=[],
        purpose=request.purpose,
    )


def _status_refusal(
    agreement: Agreement,
    version: Version,
    current: Version | None,
    suspended: frozenset[str],
    now: datetime,
    grace_days: int,
) -> str | None:
    """Why this agreement cannot allow anything now, or None when it can."""
    if agreement.operator_state == "revoked":
        return "agreement-revoked"
    if agreement.operator_state == "suspended":
        return "agreement-suspended"
    if any(party in suspended for party in version.parties):
        return "agency-suspended"
    if current is None:
        return "agreement-not-started" if version.signed_by_all(now) else "no-active-agreement"
    if now.date() > version.end:
        return "agreement-expired"
    if review_state(version, now.date(), grace_days) == "overdue":
        return "review-overdue"
    return None


def _check(
    request: DecisionRequest,
    agreement: Agreement,
    suspended: frozenset[str],
    now: datetime,
    grace_days: int,
) -> _Refusal | Version | None:
    """The version that allows the request, a refusal, or None if the agreement is irrelevant."""
    current = in_force(agreement, now)
    version = current or agreement.latest
    grant = version.grant(request.dataset)
    if grant is None or request.agency not in version.parties:
        return None

    def refuse(stage: int, rule: str) -> _Refusal:
        return _Refusal(stage, rule, agreement.id, version.version)

    if request.action == "read":
        if request.agency not in version.recipients:
            return refuse(_STAGE_ROLE, "not-a-recipient")
    elif request.agency not in version.providers:
        return refuse(_STAGE_ROLE, "not-a-provider")
    if request.purpose is not None and request.purpose != version.purpose:
        return refuse(_STAGE_PURPOSE, "purpose-not-agreed")
    if request.action == "read" and LEVEL_RANK.get(request.wanted_level, 99) > LEVEL_RANK.get(
        grant.level, -1
    ):
        return refuse(_STAGE_LEVEL, "level-exceeds-agreement")
    # What a provider may push is not limited by allow-lists: they govern what leaves the hub.
    if request.action == "read" and request.fields and grant.fields is not None:
        if set(request.fields) - set(grant.fields):
            return refuse(_STAGE_FIELDS, "field-not-agreed")
    if request.action == "retract":
        # A provider may always erase its own records, whatever its agreements' state.
        return version
    blocked = _status_refusal(agreement, version, current, suspended, now, grace_days)
    if blocked is not None:
        return refuse(_STAGE_STATUS, blocked)
    return version


def _warning(version: Version, now: datetime, grace_days: int) -> str | None:
    if review_state(version, now.date(), grace_days) != "grace":
        return None
    return (
        f"Agreement {version.agreement_id} version {version.version} was due for review on "
        f"{version.review_by}; it stops allowing after {grace_until(version, grace_days)}"
    )


def _grants(
    request: DecisionRequest, versions: list[Version], suspended: frozenset[str]
) -> tuple[Grant, ...]:
    """One grant per provider and agreement whose data the action would use.

    A read uses every provider of each allowing agreement (the caller is its recipient there); a
    push or retraction uses only the caller's own records, and every field may come in.
    """
    made = []
    for version in versions:
        terms = version.grant(request.dataset)
        assert terms is not None  # _check kept only agreements that cover the dataset
        reading = request.action == "read"
        providers = version.providers if reading else (request.agency,)
        for provider in providers:
            if provider in suspended:
                continue
            made.append(
                Grant(
                    provider=provider,
                    agreement=version.agreement_id,
                    version=version.version,
                    level=terms.level,
                    fields=sorted(terms.fields) if reading and terms.fields is not None else None,
                    start=version.start.isoformat(),
                    end=version.end.isoformat(),
                    purpose=version.purpose,
                )
            )
    return tuple(sorted(made, key=lambda g: (g.provider, g.agreement)))


def _united_fields(grants: tuple[Grant, ...]) -> list[str] | None:
    """Every field some grant shows (None: every field); each provider still sees only its own."""
    names: set[str] = set()
    for grant in grants:
        if grant.fields is None:
            return None
        names.update(grant.fields)
    return sorted(names)


def decide(
    request: DecisionRequest,
    agency: AgencyFacts | None,
    agreements: Iterable[Agreement],
    now: datetime,
    *,
    suspended: frozenset[str] = frozenset(),
    grace_days: int = 30,
) -> Decision:
    """Decide ``request`` at ``now`` (timezone-aware) given the candidate agreements.

    ``suspended`` names every suspended agency: an agreement with a suspended party allows nothing.
    """
    if agency is None or agency.code != request.agency:
        return _deny(request, _Refusal(-1, "no-active-agreement", None, None))
    if agency.status == "suspended" or agency.code in suspended:
        return _deny(request, _Refusal(-1, "agency-suspended", None, None))
    if request.action not in ACTIONS:
        return _deny(request, _Refusal(-1, "no-active-agreement", None, None))

    allowing: list[Version] = []
    best = _Refusal(-1, "no-active-agreement", None, None)
    for agreement in sorted(agreements, key=lambda a: a.id):
        outcome = _check(request, agreement, suspended, now, grace_days)
        if isinstance(outcome, Version):
            allowing.append(outcome)
        elif outcome is not None and outcome.stage > best.stage:
            best = outcome
    if not allowing:
        return _deny(request, best)

    warnings = {v.agreement_id: _warning(v, now, grace_days) for v in allowing}
    # Prefer an agreement not awaiting review, so the answer cites one in good standing.
    chosen = min(allowing, key=lambda v: (warnings[v.agreement_id] is not None, v.agreement_id))
    grants = _grants(request, allowing, suspended)
    texts = [text for text in warnings.values() if text]
    return Decision(
        allow=True,
        rule="allowed",
        agreement=chosen.agreement_id,
        version=chosen.version,
        fields=_united_fields(grants),
        providers=sorted({g.provider for g in grants}),
        purpose=request.purpose or chosen.purpose,
        retention_days=chosen.retention_days,
        window=[chosen.start.isoformat(), chosen.end.isoformat()],
        warning="; ".join(texts) if texts else None,
        grants=grants,
    )
