"""What an aggregates query may ask and how it is answered: the checks of its parameters (in the
order a caller meets them), the dataset's disclosure floor under a caller's threshold, the table
size limit, the cohort's grants, the table counted, and the release it is recorded as.
No FastAPI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.engine import Connection

from services.depersonalise import cube, tables
from services.depersonalise.aggregates import ALL, Rule
from services.depersonalise.cohorts import RELATIVE_REACH
from services.depersonalise.layer_registry import Registry
from services.depersonalise.layers import layer_or_error
from services.depersonalise.record_reads import providers_holding
from services.depersonalise.service import coarser_or_equal, dataset_or_404, period_count
from shared.catalogue import Dataset
from shared.errors import ProblemError
from shared.grants import Slices, slices_of
from shared.tokens import InternalClaims

EARLIEST, LATEST = date(1900, 1, 1), date(2199, 12, 31)
COHORT_DATASET = tables.COHORT_DATASET
BREAKDOWN_CLASSES = cube.BREAKDOWN_CLASSES


@dataclass(frozen=True)
class AggregateQuery:
    """The parameters of one aggregates query, as the caller gave them."""

    geography: str | None
    period: str
    first: date | None
    last: date | None
    by: str | None
    threshold: int | None
    cohort: str | None
    count: str
    relative: str | None


def disclosure_rule(spec: Dataset, asked: int | None) -> Rule:
    """The dataset's rule, with the caller's threshold when higher; never below the floor."""
    rule = spec.disclosure
    if asked is not None and asked < rule.floor:
        raise ProblemError(
            422,
            f"The threshold may not go below the dataset's floor of {rule.floor}.",
            slug="threshold-below-floor",
            field="threshold",
            rule="disclosure-floor",
        )
    threshold = max(asked or rule.threshold, rule.floor, rule.threshold)
    noise = rule.perturbation.max if rule.perturbation is not None else None
    return Rule(threshold, rule.round_to, rule.secondary, noise, rule.threshold)


def check_cohort_terms(spec: Dataset, query: AggregateQuery) -> None:
    """``relative`` needs a cohort and a period it reaches; a table without cohort needs a
    geography; people are counted only in a dataset with person fields."""
    if query.relative is not None and query.cohort is None:
        raise ProblemError(
            422, "relative=joined needs cohort.", slug="relative-without-cohort", field="relative"
        )
    if query.geography is None and query.cohort is None:
        raise ProblemError(
            422, "geography is required unless cohort is given.", slug="missing", field="geography"
        )
    if query.relative is not None and query.period not in RELATIVE_REACH:
        raise ProblemError(
            422,
            "relative=joined counts by month or quarter.",
            slug="period-not-relative",
            field="period",
        )
    if query.count == "people" and not spec.link_fields:
        raise ProblemError(
            422,
            f"{spec.name} has no person fields: it cannot be counted by people.",
            slug="no-person-fields",
            field="count",
        )


def check_breakdown(spec: Dataset, scope: Slices, by: str | None) -> None:
    """``by`` names the dataset's category or one of its attribute fields that a grant shows."""
    if by is None:
        return
    field = spec.field(by)
    known = by == "category" or (field is not None and field.classification in BREAKDOWN_CLASSES)
    granted = scope.uniform_fields()
    if not known or (granted is not None and by not in granted):
        raise ProblemError(
            422,
            f"{spec.name} cannot be counted by {by!r}: "
            + ("not one of its attribute fields." if not known else "no grant includes it."),
            slug="invalid-breakdown",
            field="by",
        )


def check_table_size(
    first: date | None, last: date | None, period: str, areas: int, max_cells: int
) -> None:
    """Refuse a range outside the supported years, or one whose table would be unreasonably big."""
    for name, day in (("from", first), ("to", last)):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise ProblemError(
                422,
                f"{name} must lie between {EARLIEST} and {LATEST}.",
                slug="invalid-range",
                field=name,
            )
    if first is not None and last is not None:
        cells = period_count(first, last, period) * areas
        if cells > max_cells:
            raise ProblemError(
                422,
                f"The table would have {cells:,} cells (limit {max_cells:,}): narrow the range "
                "or choose a coarser period.",
                slug="table-too-large",
                field="from",
            )


def checked_areas(
    spec: Dataset,
    scope: Slices,
    registry: Registry,
    query: AggregateQuery,
    max_cells: int,
) -> tuple[Any, list[tuple[str, str]]]:
    """Every check of the query, in order; the layer counted on (None for a cohort without
    geography) and its areas as ``(code, name)`` (one area, ``all``, without a layer)."""
    check_cohort_terms(spec, query)
    check_breakdown(spec, scope, query.by)
    geography = query.geography
    layer = layer_or_error(registry, geography) if geography is not None else None
    if not coarser_or_equal(query.period, spec.time_resolution):
        raise ProblemError(
            422,
            f"{spec.name} is held by {spec.time_resolution}; it cannot be counted by "
            f"{query.period}.",
            slug="period-too-fine",
            field="period",
        )
    if query.first and query.last and query.first > query.last:
        raise ProblemError(422, "from is after to.", slug="invalid-range", field="from")
    area_list = (
        list(zip(layer.codes.tolist(), layer.names.tolist(), strict=True))
        if layer is not None
        else [(ALL, ALL)]
    )
    check_table_size(query.first, query.last, query.period, len(area_list), max_cells)
    tables.check_whole_periods(query.first, query.last, query.period, query.relative is not None)
    return layer, area_list


def cohort_scope(claims: InternalClaims, dataset: str, scope: Slices) -> Slices:
    """The caller's grants on offender-cohort, carried beside those on the dataset counted."""
    if dataset == COHORT_DATASET:
        return scope
    if claims.cohort_grants is None:
        raise ProblemError(
            403,
            "A cohort query needs a grant on offender-cohort.",
            slug="forbidden",
            rule="cohort-not-granted",
        )
    return slices_of(claims.cohort_grants)


def count_table(
    conn: Connection,
    registry: Registry,
    catalogue: dict[str, Dataset],
    spec: Dataset,
    asker: tuple[InternalClaims, Slices],
    query: AggregateQuery,
    area_list: list[tuple[str, str]],
) -> tuple[dict[str, Any], Rule, list[str]]:
    """The table counted (from the cube, or per cohort member), the rule it was published under
    (a cohort's is the stricter of both datasets'), and the providers a cohort table leaves out
    because no grant covers their records."""
    claims, scope = asker
    rule = disclosure_rule(spec, query.threshold)
    people = query.count == "people"
    span = (query.period, query.first, query.last)
    if query.cohort is None:
        answer = tables.cube_table(
            conn,
            registry,
            spec,
            scope,
            str(query.geography),
            area_list,
            span,
            query.by,
            rule,
            people,
        )
        return answer, rule, []
    dataset = spec.name
    cohort = cohort_scope(claims, dataset, scope)
    if dataset != COHORT_DATASET:
        rule = rule.stricter(
            disclosure_rule(dataset_or_404(catalogue, COHORT_DATASET), query.threshold)
        )
    answer = tables.cohort_table(
        conn,
        registry,
        spec,
        (scope, cohort),
        query.geography,
        area_list,
        span,
        query.by,
        rule,
        (query.cohort, people, query.relative),
    )
    held = providers_holding(conn, registry.generation, dataset)
    if dataset != COHORT_DATASET:
        held |= providers_holding(conn, registry.generation, COHORT_DATASET)
    return answer, rule, sorted(held - set(scope.providers) - set(cohort.providers))


def release_query(
    query: AggregateQuery, rule: Rule, providers: list[str], fmt: str
) -> dict[str, Any]:
    """The query as its release records it."""
    return {
        "geography": query.geography,
        "period": query.period,
        "from": str(query.first or ""),
        "to": str(query.last or ""),
        "by": query.by,
        "threshold": rule.threshold,
        "providers": providers,
        "format": fmt,
        "cohort": query.cohort,
        "count": query.count,
        "relative": query.relative,
    }


def answer_body(
    query: AggregateQuery,
    rule: Rule,
    answer: dict[str, Any],
    release: tuple[str, str | None, str],
    left_out: list[str],
) -> dict[str, Any]:
    """The answer as sent: ``release`` is (dataset, agreement, release id)."""
    dataset, agreement, release_id = release
    body = {
        "dataset": dataset,
        "geography": query.geography or ALL,
        "period": query.period,
        "rule": rule.as_dict(),
        "cells": answer["cells"],
        "disclosure": answer["disclosure"],
        "agreement": agreement,
        "release_id": release_id,
    }
    if query.cohort is not None:
        body.update(
            cohort=query.cohort,
            count=query.count,
            relative=query.relative,
            providers_left_out=left_out,
        )
    return body
