"""What a request forwarded to a backend carries: the decisions it needs from agreements (one,
two for a cohort query, one per person dataset for the case view), the claims its internal
token then states, the scope a key needs, and what its audit entry says. No ASGI here: the hot
path (``proxy.py``) calls these with the request's route, query and headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.gateway import routing
from services.gateway.audit_entries import now_iso, outcome_of
from services.gateway.decisions import DecisionCache
from services.gateway.keys import Caller, scopes_for
from shared.errors import ProblemError


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def audited_providers(decision: dict[str, Any], action: str | None) -> list[str] | None:
    """The entry's ``providers``: the provider codes, then for a read every ``agreement:version``
    of its grants (a colon never occurs in an agency code), so the entry names all that governed."""
    providers = decision.get("providers")
    grants = decision.get("grants") or []
    if providers is None or action != "read" or not grants:
        return providers
    cited = sorted({f"{g['agreement']}:{g['version']}" for g in grants})
    return [*providers, *cited]


@dataclass
class Exchange:
    """What the audit entry of one request says, filled in as the request is handled."""

    request_id: str
    method: str
    route: str = "unmatched"
    caller: Caller | None = None
    dataset: str | None = None
    action: str | None = None
    level: str | None = None
    purpose: str | None = None
    reason: str | None = None
    decision: dict[str, Any] = field(default_factory=dict)

    def entry(self, phase: str, status: int | None, records: int | None) -> dict[str, Any]:
        decision = self.decision
        return {
            "at": now_iso(),
            "request_id": self.request_id,
            "phase": phase,
            "agency": self.caller.agency if self.caller else None,
            "key_id": self.caller.key_id if self.caller else None,
            "method": self.method,
            "route": self.route,
            "dataset": self.dataset,
            "action": self.action,
            "level": self.level,
            "purpose": self.purpose or decision.get("purpose"),
            "rule": decision.get("rule"),
            "agreement": decision.get("agreement"),
            "version": decision.get("version"),
            "providers": audited_providers(decision, self.action),
            "status": status,
            "outcome": outcome_of(status, phase),
            "records": records,
            "reason": self.reason,
        }


def check_scope(route: routing.Route, caller: Caller) -> None:
    """403 unless the caller's key holds the scope the route needs."""
    if route.scope is None or route.scope in caller.scopes:
        return
    if route.admin_only and routing.ADMIN not in scopes_for(caller.agency):
        raise ProblemError(403, "Operators only.", slug="forbidden", rule="admin-only")
    raise ProblemError(
        403,
        f"This key does not hold the scope {route.scope!r} this route needs.",
        slug="forbidden",
        rule="key-scope",
        scope=route.scope,
    )


async def decide(
    cache: DecisionCache,
    exchange: Exchange,
    match: routing.Match,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    claims: dict[str, Any],
) -> str:
    """The backend an allowed request goes to: the decision kept in ``exchange`` (for the audit
    entry) and in ``claims`` (for the backend's token); 403 when agreements refuse."""
    route = match.route
    level = route.level
    fields = None
    if route.action == "read":
        level = level or routing.read_level(query)
        fields = routing.requested_fields(query)
    purpose = header(headers, b"csp-purpose")
    if route.reason:
        exchange.reason = stated_reason(headers)
    if route.dataset == routing.PEOPLE:
        return await _decide_people(cache, exchange, claims, level, purpose)
    exchange.dataset = match.params.get("dataset") or route.dataset or routing.query_dataset(query)
    exchange.action = route.action
    exchange.level = level
    exchange.purpose = purpose
    assert exchange.caller is not None and route.action is not None
    decision = await cache.decide(
        exchange.caller.agency, route.action, exchange.dataset, level, purpose, fields
    )
    exchange.decision = decision
    refuse_unless_allowed(decision)
    claims.update(
        action=route.action,
        dataset=exchange.dataset,
        level=level,
        purpose=purpose or decision.get("purpose"),
        rule=decision.get("rule"),
        agreement=decision.get("agreement"),
        version=decision.get("version"),
        fields=decision.get("fields"),
        providers=decision.get("providers"),
        retention_days=decision.get("retention_days"),
        window=decision.get("window"),
        grants=decision.get("grants"),
    )
    if route.level == "aggregate" and routing.query_param(query, "cohort") is not None:
        await _decide_cohort(cache, exchange, claims, purpose)
    if route.action == "read" and level == "personal":
        return routing.INGEST
    return route.backend


async def _decide_people(
    cache: DecisionCache,
    exchange: Exchange,
    claims: dict[str, Any],
    level: str | None,
    purpose: str | None,
) -> str:
    """The case view reads each person dataset the caller is granted at level personal; its
    grants travel per dataset as ``dataset_grants``; refused when none is granted."""
    assert exchange.caller is not None
    exchange.action, exchange.level, exchange.purpose = "read", level, purpose
    granted: dict[str, list[dict[str, Any]]] = {}
    decisions = []
    for dataset in routing.person_datasets():
        decision = await cache.decide(exchange.caller.agency, "read", dataset, level, purpose, None)
        decisions.append(decision)
        if decision.get("allow"):
            granted[dataset] = decision.get("grants") or []
    allowed = [d for d in decisions if d.get("allow")]
    exchange.decision = allowed[0] if allowed else decisions[0]
    if not allowed:
        refuse_unless_allowed(exchange.decision)
    exchange.decision = {
        **exchange.decision,
        "providers": sorted({p for d in allowed for p in d.get("providers") or []}),
        "grants": [g for d in allowed for g in d.get("grants") or []],
    }
    claims.update(
        action="read",
        level=level,
        purpose=purpose or exchange.decision.get("purpose"),
        rule=exchange.decision.get("rule"),
        agreement=exchange.decision.get("agreement"),
        version=exchange.decision.get("version"),
        providers=exchange.decision["providers"],
        dataset_grants=granted,
    )
    return routing.INGEST


async def _decide_cohort(
    cache: DecisionCache, exchange: Exchange, claims: dict[str, Any], purpose: str | None
) -> None:
    """A cohort query needs a grant on the cohort's memberships as well: their grants travel
    as ``cohort_grants`` and the audit entry names both decisions' agreements."""
    assert exchange.caller is not None
    if exchange.dataset == routing.COHORT_DATASET:
        claims["cohort_grants"] = claims.get("grants")
        return
    decision = await cache.decide(
        exchange.caller.agency, "read", routing.COHORT_DATASET, "aggregate", purpose, None
    )
    refuse_unless_allowed(decision, f" on {routing.COHORT_DATASET}")
    claims["cohort_grants"] = decision.get("grants") or []
    first = exchange.decision
    exchange.decision = {
        **first,
        "providers": sorted(
            set(first.get("providers") or []) | set(decision.get("providers") or [])
        ),
        "grants": [*(first.get("grants") or []), *claims["cohort_grants"]],
    }


REASON_LENGTH = 300


def stated_reason(headers: list[tuple[bytes, bytes]]) -> str:
    """The grounds a case-view read must state, kept in its audit entry."""
    reason = (header(headers, b"csp-reason") or "").strip()
    if not reason:
        raise ProblemError(
            422,
            "A case-view read must state its grounds in the CSP-Reason header.",
            slug="reason-required",
            field="CSP-Reason",
        )
    if len(reason) > REASON_LENGTH:
        raise ProblemError(
            422,
            f"CSP-Reason is longer than {REASON_LENGTH} characters.",
            slug="reason-too-long",
            field="CSP-Reason",
        )
    return reason


def refuse_unless_allowed(decision: dict[str, Any], about: str = "") -> None:
    if not decision.get("allow"):
        rule = decision.get("rule") or "denied"
        raise ProblemError(
            403,
            f"Refused by rule {rule}{about}.",
            slug="forbidden",
            rule=rule,
            agreement=decision.get("agreement"),
            version=decision.get("version"),
        )
