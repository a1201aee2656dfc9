"""Clerical review of the pairs linkage was unsure of (or kept apart on conflicting identifiers),
and the linkage quality report: link rates, match-weight bands, people, and against a labelled set
pairwise precision and recall. Operators only; the pairs show personal data. Each function works
in the request's transaction (``deps.ReadDep``, ``deps.WriteDep`` for a decision)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select, update

from services.ingest.instants import iso, utc_now
from services.ingest.linkage import republish
from services.ingest.linkage_fields import COMPARED, STRONG, in_chunks
from services.ingest.tables import LINK, MODEL, RECORD, REVIEW
from shared.errors import ProblemError


def pending_reviews(connection: Connection, after: int = 0, limit: int = 100) -> dict[str, Any]:
    """Pairs awaiting review — uncertain (``reason`` weight) or kept apart on conflicting strong
    identifiers (``conflict``, no match weight) — with both records' person fields side by side
    (for operators: personal data, admin scope only)."""
    rows = connection.execute(
        select(REVIEW)
        .where(REVIEW.c.status == "pending", REVIEW.c.id > after)
        .order_by(REVIEW.c.id)
        .limit(limit)
    ).all()
    ids = {r.record_id for r in rows} | {r.candidate_record for r in rows}
    links = {
        row.record_id: row
        for part in in_chunks(sorted(ids))
        for row in connection.execute(select(LINK).where(LINK.c.record_id.in_(part)))
    }

    def side(record_id: int) -> dict[str, Any]:
        row = links.get(record_id)
        if row is None:
            return {"record": record_id}
        shown = ("provider", "dataset", *STRONG, *COMPARED)
        return {"record": record_id, **{name: getattr(row, name) for name in shown}}

    reviews = [
        {
            "review_id": r.id,
            "reason": r.reason,
            "match_weight": None if r.match_weight is None else round(r.match_weight, 3),
            "created_at": r.created_at,
            "record": side(r.record_id),
            "candidate": side(r.candidate_record),
        }
        for r in rows
    ]
    following = rows[-1].id if len(rows) == limit else None
    return {"reviews": reviews, "next_cursor": following}


def decide(connection: Connection, review_id: int, decision: str, by: str) -> dict[str, Any]:
    """Accept (the record joins the candidate's person) or reject an uncertain pair."""
    if decision not in ("accept", "reject"):
        raise ProblemError(
            422, "decision must be 'accept' or 'reject'.", slug="bad-decision", field="decision"
        )
    moment = iso(utc_now())
    review = connection.execute(select(REVIEW).where(REVIEW.c.id == review_id)).first()
    if review is None or review.status != "pending":
        raise ProblemError(
            404, "No pending review with that id.", slug="review-not-found", field="review_id"
        )
    if decision == "accept":
        target = connection.execute(
            select(LINK.c.person_id).where(LINK.c.record_id == review.candidate_record)
        ).scalar()
        source = connection.execute(
            select(LINK.c.person_id).where(LINK.c.record_id == review.record_id)
        ).scalar()
        if target is None or source is None:
            raise ProblemError(
                409, "One of the records has gone.", slug="review-stale", field="review_id"
            )
        # the whole of the record's person joins: its other records came with it
        moved = connection.execute(
            select(LINK.c.record_id).where(LINK.c.person_id == source)
        ).scalars()
        republish(connection, list(moved), utc_now())
        connection.execute(
            update(LINK)
            .where(LINK.c.person_id == source)
            .values(person_id=target, method="reviewed", linked_at=moment)
        )
    connection.execute(
        update(REVIEW)
        .where(REVIEW.c.id == review_id)
        .values(
            status="accepted" if decision == "accept" else "rejected",
            decided_at=moment,
            decided_by=by,
        )
    )
    return {"review_id": review_id, "status": "accepted" if decision == "accept" else "rejected"}


WEIGHT_BANDS = (-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0)


def quality_report(connection: Connection, truth: dict[int, str] | None = None) -> dict[str, Any]:
    """Link rates per dataset, the match-weight distribution, pending reviews, and precision and
    recall of the links against a labelled set (record id → true person) when given one."""
    people = connection.execute(
        select(LINK.c.person_id, func.count()).group_by(LINK.c.person_id)
    ).all()
    pending_by_reason: dict[str, int] = dict(
        connection.execute(
            select(REVIEW.c.reason, func.count())
            .where(REVIEW.c.status == "pending")
            .group_by(REVIEW.c.reason)
        ).all()
    )
    model = connection.execute(
        select(MODEL.c.id, MODEL.c.trained_at, MODEL.c.records, MODEL.c.labelled_pairs)
        .order_by(MODEL.c.id.desc())
        .limit(1)
    ).first()
    report: dict[str, Any] = {
        "datasets": _dataset_rates(connection),
        "people": len(people),
        "people_with_several_records": sum(1 for _, count in people if count > 1),
        "match_weights": _weight_bands(connection),
        "pending_reviews": int(sum(pending_by_reason.values()) or 0),
        "pending_conflicts": int(pending_by_reason.get("conflict", 0)),
        "model": None if model is None else dict(model._mapping),
    }
    if truth is not None:
        assigned = dict(connection.execute(select(LINK.c.record_id, LINK.c.person_id)).all())
        report["against_truth"] = pair_quality(assigned, truth)
    return report


def _dataset_rates(connection: Connection) -> dict[str, dict[str, Any]]:
    """Per dataset: its linked records, how many share their person with another record, and by
    which method they were linked."""
    per_dataset: dict[str, dict[str, int]] = {}
    for dataset, method, count in connection.execute(
        select(LINK.c.dataset, LINK.c.method, func.count()).group_by(LINK.c.dataset, LINK.c.method)
    ):
        per_dataset.setdefault(dataset, {})[method] = int(count)
    shared = select(LINK.c.person_id).group_by(LINK.c.person_id).having(func.count() > 1)
    linked_by_dataset: dict[str, int] = dict(
        connection.execute(
            select(LINK.c.dataset, func.count())
            .where(LINK.c.person_id.in_(shared))
            .group_by(LINK.c.dataset)
        ).all()
    )
    datasets = {}
    for name, methods in sorted(per_dataset.items()):
        total = sum(methods.values())
        linked = int(linked_by_dataset.get(name, 0))  # its person has other records
        datasets[name] = {
            "records": total,
            "linked": linked,
            "link_rate": round(linked / total, 4),
            "by_method": methods,
        }
    return datasets


def _weight_bands(connection: Connection) -> list[dict[str, Any]]:
    """How many probabilistic links fall in each band of ``WEIGHT_BANDS``."""
    weights = connection.execute(
        select(LINK.c.match_weight).where(LINK.c.match_weight.is_not(None))
    ).scalars()
    edges: list[float | None] = [None, *WEIGHT_BANDS, None]
    counts = [0] * (len(WEIGHT_BANDS) + 1)
    for value in weights:
        counts[next((i for i, e in enumerate(WEIGHT_BANDS) if value < e), len(WEIGHT_BANDS))] += 1
    return [
        {"from": edges[i], "to": edges[i + 1], "links": count} for i, count in enumerate(counts)
    ]


def labelled_truth(connection: Connection, labels: list[dict[str, str]]) -> dict[int, str]:
    """A labelled set (provider, dataset, source_ref → true person) as record id → label; labels
    naming no stored record are left out."""
    wanted = {(e["provider"], e["dataset"], e["source_ref"]): str(e["person"]) for e in labels}
    found: dict[int, str] = {}
    refs = sorted({ref for _, _, ref in wanted})
    for part in in_chunks(refs):
        query = select(RECORD.c.id, RECORD.c.provider, RECORD.c.dataset, RECORD.c.source_ref).where(
            RECORD.c.source_ref.in_(part)
        )
        for record_id, provider, dataset, ref in connection.execute(query):
            label = wanted.get((provider, dataset, ref))
            if label is not None:
                found[record_id] = label
    return found


def pair_quality(assigned: dict[int, int], truth: dict[int, str]) -> dict[str, Any]:
    """Pairwise precision and recall of a clustering against the true one (same records)."""

    def pairs(groups: dict[Any, list[int]]) -> set[tuple[int, int]]:
        out: set[tuple[int, int]] = set()
        for members in groups.values():
            ordered = sorted(members)
            out.update((a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :])
        return out

    common = set(assigned) & set(truth)
    by_person: dict[int, list[int]] = {}
    by_truth: dict[str, list[int]] = {}
    for record_id in common:
        by_person.setdefault(assigned[record_id], []).append(record_id)
        by_truth.setdefault(truth[record_id], []).append(record_id)
    found, real = pairs(by_person), pairs(by_truth)
    true_positive = len(found & real)
    return {
        "records": len(common),
        "pairs_found": len(found),
        "pairs_true": len(real),
        "precision": round(true_positive / len(found), 4) if found else 1.0,
        "recall": round(true_positive / len(real), 4) if real else 1.0,
    }
