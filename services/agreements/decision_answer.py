"""A decision as the API answers it: asked of this replica's snapshot (``decisions.decide`` is
the rule), recorded in the decision log, and the caller's own view of its agreements (``/v1/me``).
"""

from __future__ import annotations

from typing import Any

from services.agreements.change_log import utcnow
from services.agreements.decisions import DecisionRequest
from services.agreements.models import DecisionPublic, DecisionQuery, InternalDecisionQuery
from services.agreements.state import Runtime
from services.agreements.views import party_summary
from shared.errors import ProblemError


def decision_request(agency: str, body: DecisionQuery | InternalDecisionQuery) -> DecisionRequest:
    return DecisionRequest(
        agency=agency,
        action=body.action,
        dataset=body.dataset or "",
        level=body.level,
        purpose=body.purpose,
        fields=tuple(body.fields) if body.fields is not None else None,
    )


async def decided(
    runtime: Runtime, request: DecisionRequest, grace_days: int, *, explain: bool
) -> DecisionPublic:
    """The decision on the current snapshot, recorded in the decision log. An explanation is not
    counted as use of an agreement, nor replayed by dry runs."""
    now = utcnow()
    snapshot = await runtime.snapshots.current_async()
    decision = snapshot.decide(request, now, grace_days)
    runtime.recorder.record(request, decision, now, explain=explain)
    return DecisionPublic(**decision.as_dict())


async def own_view(runtime: Runtime, agency: str, grace_days: int) -> dict[str, Any]:
    """The agency and a line for each agreement it is party to; 404 for an unknown agency."""
    snapshot = await runtime.snapshots.current_async()
    info = snapshot.agencies.get(agency)
    if info is None:
        raise ProblemError(404, f"No agency {agency!r}.", slug="agency-not-found")
    now = utcnow()
    summaries = [
        party_summary(s, agency, now, grace_days) for s in snapshot.by_agency.get(agency, [])
    ]
    return {"agency": info.public(), "agreements": [s for s in summaries if s is not None]}
