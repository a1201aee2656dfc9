"""How long each provider's records of each dataset may be kept, as plain data.

While an agreement in force covers a (provider, dataset) pair, records are kept for the longest
``retention_days`` among those agreements, counted from receipt; a suspension is reversible, so a
suspended agreement still counts. Once none does, the last agreement that did (the one that ended
or was revoked most recently) sets the limit: every record goes ``retention_days`` after that end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlmodel import Session

from services.agreements.change_log import revocation_days
from services.agreements.lifecycle import Agreement, in_force
from services.agreements.service import StoredAgreement


def retention_rules(
    agreements: Iterable[Agreement], revoked_on: Mapping[str, date], now: datetime
) -> list[dict[str, Any]]:
    """``[{"provider", "dataset", "retention_days"}]``, with ``"ended"`` (ISO date) on a pair no
    agreement in force covers any more. ``revoked_on`` gives each revoked agreement's day."""
    longest: dict[tuple[str, str], int] = {}
    last_end: dict[tuple[str, str], tuple[date, int]] = {}
    for agreement in agreements:
        current = in_force(agreement, now)
        if current is None:
            continue  # never in force: nothing was pushed under it
        ended: date | None = None
        if agreement.operator_state == "revoked":
            ended = min(revoked_on.get(agreement.id, now.date()), current.end)
        elif now.date() > current.end:
            ended = current.end
        for provider in current.providers:
            for grant in current.datasets:
                key = (provider, grant.dataset)
                if ended is None:
                    longest[key] = max(longest.get(key, 0), current.retention_days)
                elif key not in last_end or ended > last_end[key][0]:
                    last_end[key] = (ended, current.retention_days)
    rules: list[dict[str, Any]] = [
        {"provider": p, "dataset": d, "retention_days": days} for (p, d), days in longest.items()
    ]
    rules += [
        {"provider": p, "dataset": d, "retention_days": days, "ended": ended.isoformat()}
        for (p, d), (ended, days) in last_end.items()
        if (p, d) not in longest
    ]
    return sorted(rules, key=lambda r: (r["provider"], r["dataset"]))


def retention_in_force(
    session: Session, stored: Iterable[StoredAgreement], now: datetime
) -> list[dict[str, Any]]:
    """``retention_rules`` over these agreements, each revoked one's day read from its history."""
    agreements = [s.agreement for s in stored]
    revoked = [a.id for a in agreements if a.operator_state == "revoked"]
    return retention_rules(agreements, revocation_days(session, revoked), now)
