"""Replays recorded decisions against draft terms: which would have come out otherwise, and how."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from services.agreements import agreement_terms, service
from services.agreements.change_log import utcnow
from services.agreements.decision_log import LoggedDecision, recent, window_start
from services.agreements.decisions import (
    AgencyFacts,
    Decision,
    DecisionRequest,
    action_of,
    decide,
)
from services.agreements.lifecycle import Agreement, Version, iso_utc
from services.agreements.models import DryRunBody
from services.agreements.state import Runtime

MAX_CHANGES_LISTED = 1000


def _outcome(allow: bool, rule: str, agreement: str | None, version: int | None) -> dict[str, Any]:
    return {"allow": allow, "rule": rule, "agreement": agreement, "version": version}


def _change(logged: LoggedDecision, after: Decision) -> dict[str, Any]:
    return {
        "decision_id": logged.id,
        "at": iso_utc(logged.at),
        "agency": logged.agency,
        "action": logged.action,
        "dataset": logged.dataset,
        "level": logged.level,
        "purpose": logged.purpose,
        "before": _outcome(logged.allow, logged.rule, logged.agreement, logged.version),
        "after": _outcome(after.allow, after.rule, after.agreement, after.version),
    }


def replay(
    target: Agreement,
    draft: Version,
    decisions: Sequence[LoggedDecision],
    candidates: Mapping[str, Sequence[Agreement]],
    agencies: Mapping[str, AgencyFacts],
    suspended: frozenset[str],
    grace_days: int,
) -> dict[str, Any]:
    """Each decision decided again at its own time, with ``draft`` in force instead of ``target``.

    The draft counts as signed by every party and not suspended: the question is what its terms
    would do. ``candidates`` gives each agency's other agreements.
    """
    signed = dict.fromkeys(draft.parties, datetime.min.replace(tzinfo=UTC))
    proposed = Agreement(
        id=target.id,
        operator_state="none",
        versions=(replace(draft, agreement_id=target.id, signatures=signed),),
    )
    changes: list[dict[str, Any]] = []
    counts = {"allow_to_deny": 0, "deny_to_allow": 0, "rule_changed": 0}
    for logged in decisions:
        others = [a for a in candidates.get(logged.agency, ()) if a.id != target.id]
        request = DecisionRequest(
            agency=logged.agency,
            action=action_of(logged.action),
            dataset=logged.dataset,
            level=logged.level,
            purpose=logged.purpose,
        )
        after = decide(
            request,
            agencies.get(logged.agency),
            [*others, proposed],
            logged.at,
            suspended=suspended,
            grace_days=grace_days,
        )
        if (after.allow, after.rule) == (logged.allow, logged.rule):
            continue
        if logged.allow and not after.allow:
            counts["allow_to_deny"] += 1
        elif after.allow and not logged.allow:
            counts["deny_to_allow"] += 1
        else:
            counts["rule_changed"] += 1
        if len(changes) < MAX_CHANGES_LISTED:
            changes.append(_change(logged, after))
    changed = sum(counts.values())
    return {
        "examined": len(decisions),
        "changed": changed,
        "summary": counts,
        "changes": changes,
        "truncated": changed > len(changes),
    }


def dry_run(
    session: Session,
    runtime: Runtime,
    stored: service.StoredAgreement,
    body: DryRunBody,
    grace_days: int,
) -> dict[str, Any]:
    """The body's terms as the agreement's next version, replayed over the decisions of the last
    ``body.days`` days that concern any of its parties (old or new)."""
    terms = agreement_terms.validate(session, body, runtime.codes, runtime.catalogue)
    target = stored.agreement
    draft = service.version_from_terms(target.id, target.latest.version + 1, terms, {})
    runtime.recorder.flush()
    snapshot = runtime.snapshots.current()
    now = utcnow()
    parties = {p for v in target.versions for p in v.parties} | set(draft.parties)
    decisions = recent(session, window_start(now, body.days), parties)
    candidates: dict[str, list[Agreement]] = {
        code: [s.agreement for s in snapshot.by_agency.get(code, [])] for code in parties
    }
    facts = {code: info.facts() for code, info in snapshot.agencies.items()}
    outcome = replay(target, draft, decisions, candidates, facts, snapshot.suspended, grace_days)
    return {"agreement": target.id, "draft_version": draft.version, "days": body.days, **outcome}
