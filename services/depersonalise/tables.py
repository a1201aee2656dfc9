"""Aggregates answers: base cells read from the count cube (or, for cohorts, from the cohort's
members' records) and laid out under the release lattice (protection.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from services.depersonalise import base_cells, cube
from services.depersonalise.aggregates import (
    ALL,
    Fact,
    Rule,
    also_blocked,
    area_index,
    calendar_layout,
    fact_cells,
    granted_rows,
    laid_out,
    lattice_answer,
    lattice_table,
    uncovered_of,
    whole_granted,
)
from services.depersonalise.cell_table import paused_collector
from services.depersonalise.cohorts import (
    Cohort,
    cohort_of,
    in_cohort,
    membership_facts,
    relative_layout,
    relative_month,
)
from services.depersonalise.layer_registry import Registry
from services.depersonalise.populations import population
from services.depersonalise.record_reads import aggregate_rows, base_people
from shared.catalogue import Dataset
from shared.errors import ProblemError
from shared.grants import Slices
from shared.periods import next_period, period_start

COHORT_DATASET = "offender-cohort"
Span = tuple[str, date | None, date | None]  # period asked, from, to


def family_of(registry: Registry, layer: str) -> tuple[str, dict[str, str] | None]:
    """The base layer of ``layer``'s family (the finest loaded layer nested in it) and each base
    area's area in ``layer``; None when the layer is its own base."""
    base = registry.family.get(layer)
    if base is None or base == layer:
        return layer, None
    return base, registry.parents.get((base, layer), {})


def nested_in(registry: Registry, layer: str) -> list[tuple[str, dict[str, str] | None]]:
    """The family base of ``layer`` with its parent map, then every other loaded layer nested in
    ``layer`` whose answers are cut from another lattice (another family base).

    A layer of the same family (``layer`` itself, or one between it and the base) publishes only
    sums of the base's published cells, so its own lattice adds nothing to hide; a cell it would
    hide (a cover) could still be added up from the base's answers."""
    base, parent_of = family_of(registry, layer)
    others = sorted(
        (child, mapping)
        for (child, parent), mapping in registry.parents.items()
        if parent == layer and registry.family.get(child, child) != base
    )
    return [(base, parent_of), *others]


def cube_table(
    conn: Connection,
    registry: Registry,
    spec: Dataset,
    scope: Slices,
    geography: str,
    area_list: list[tuple[str, str]],
    span: Span,
    by: str | None,
    rule: Rule,
    people: bool,
) -> dict[str, Any]:
    """A calendar table read from the count cube: its cost grows with the cells answered.

    Its counts are the sums of its family base's cells; a cell is published only if no layer
    nested in the answer's (the base, and any other, each its own lattice) hides a part of it,
    so that no nested layer's answers can be subtracted from it."""
    period, first, last = span
    layers = nested_in(registry, geography)
    answer: Any = None
    for base_layer, parent_of in layers:
        query = cube.Query(registry.generation, spec.name, base_layer, by, first, last)
        rows, who, loose = _base(conn, query, spec, scope, rule, people)
        if answer is None:
            starts = {r[2] for r in who} if who is not None else set(rows.periods)
            layout = calendar_layout(
                area_list, parent_of, period, spec.time_resolution, (first, last), starts
            )
            answer, values = lattice_answer(rows, layout, rule, by, loose, who)
            continue
        nested = replace(layout, area_of=area_index(area_list, parent_of))
        other, its = lattice_answer(rows, nested, rule, by, loose, who)
        answer = also_blocked(answer, values, other, its)
    residents = population(conn, geography)
    described = {"base_layer": layers[0][0], "base_period": spec.time_resolution}
    return laid_out(answer, layout, values, by, residents, rule, described)


def _base(
    conn: Connection, query: cube.Query, spec: Dataset, scope: Slices, rule: Rule, people: bool
) -> tuple[base_cells.BaseCells, list[cube.PersonRow] | None, set[tuple[str, str, Any]]]:
    """A query's base cells (or people) and its uncovered rows, from the cube."""
    threshold = rule.lattice().threshold
    with paused_collector():
        if people:
            who = base_people(conn, query, spec, scope)
            empty = base_cells.BaseCells.of_rows([])
            return empty, who, _people_uncovered(conn, query, spec, scope, threshold)
        rows, loose = base_cells.read_table(conn, query, spec, scope, threshold)
        return rows, None, loose


def _people_uncovered(
    conn: Connection, query: cube.Query, spec: Dataset, scope: Slices, threshold: int
) -> set[tuple[str, str, Any]]:
    """Uncovered rows of a people table: the people of every breakdown, whatever fields the
    grants show (the lattice is the same for every recipient)."""
    every = Slices(
        {p: tuple(replace(t, fields=None) for t in terms) for p, terms in scope.by_provider.items()}
    )
    dims = [
        base_people(conn, replace(query, by=dim), spec, every) for dim in cube.dims_of(spec)[1:]
    ]
    return uncovered_of(dims, threshold, people=True)


def check_whole_periods(
    first: date | None, last: date | None, period: str, relative: bool = False
) -> None:
    """``from`` must start a period and ``to`` end one: a range that cuts a period would count a
    part of it under the whole period's label. Relative to joining, the range bounds calendar
    years (the base of those tables is calendar year × months since joining)."""
    unit = "year" if relative else period
    if first is not None and period_start(first, unit) != first:
        raise ProblemError(
            422,
            f"from ({first}) is not the first day of a {unit}: ranges are whole periods.",
            slug="range-cuts-period",
            field="from",
        )
    if last is not None and next_period(period_start(last, unit), unit) != last + timedelta(1):
        raise ProblemError(
            422,
            f"to ({last}) is not the last day of a {unit}: ranges are whole periods.",
            slug="range-cuts-period",
            field="to",
        )


def cohort_table(
    conn: Connection,
    registry: Registry,
    spec: Dataset,
    scopes: tuple[Slices, Slices],
    geography: str | None,
    area_list: list[tuple[str, str]],
    span: Span,
    by: str | None,
    rule: Rule,
    asked: tuple[str, bool, str | None],
) -> dict[str, Any]:
    """A cohort table, counted per record of the cohort's members only (never a whole dataset):
    the strand's memberships first, then the dataset's records of those people, as base cells
    per provider, base area and base period (a record counts when its person was a member in the
    record's base period), laid out under the release lattice."""
    scope, cohort_scope = scopes
    (period, from_, to), (cohort, people, relative) = span, asked
    generation = registry.generation
    memberships, members = _cohort(conn, generation, cohort_scope, cohort)
    base_layer, parent_of = family_of(registry, geography) if geography else (None, None)
    resolution = spec.time_resolution
    facts = whole_granted(
        aggregate_rows(
            conn, generation, spec.name, scope, base_layer, by, people=set(members.spans)
        ),
        scope,
        "year" if relative is not None else resolution,
        by,
    )
    described = {"base_layer": base_layer or ALL, "base_period": resolution}
    read_again = (conn, generation, spec, scope, base_layer)
    if relative is not None:
        facts = [f for f in facts if relative_month(f, members) is not None]

        def relative_key(fact: Fact) -> Any:
            start = fact.start or date.min
            return (date(start.year, 1, 1), relative_month(fact, members))

        rows, who = fact_cells(facts, people, by, relative_key)
        layout = relative_layout(area_list, parent_of, period, (from_, to))
        hidden_rows: set[tuple[str, str, Any]] = set()
        if by is None:
            hidden_rows = _uncovered(*read_again, facts, rule, people, relative_key)
        return lattice_table(rows, layout, rule, by, None, hidden_rows, who, described)
    facts = _calendar_facts(facts, spec, (cohort, memberships, members), (from_, to))
    rows, who = fact_cells(facts, people, by)
    starts = {r[2] for r in (who if who is not None else rows)}
    layout = calendar_layout(area_list, parent_of, period, resolution, (from_, to), starts)
    loose: set[tuple[str, str, Any]] = set()
    if by is None and spec.name != COHORT_DATASET:
        loose = _uncovered(*read_again, facts, rule, people)
    # Rates per resident are for whole populations, not for a cohort's counts.
    return lattice_table(rows, layout, rule, by, None, loose, who, described)


def _cohort(
    conn: Connection, generation: int, cohort_scope: Slices, cohort: str
) -> tuple[list[Fact], Cohort]:
    """The strand's memberships the cohort grants show, and the cohort they make (404 if none)."""
    memberships = granted_rows(
        aggregate_rows(
            conn, generation, COHORT_DATASET, cohort_scope, None, "category", category=cohort
        ),
        cohort_scope,
    )
    members = cohort_of(memberships, cohort)
    if not members.spans:
        raise ProblemError(404, f"No cohort {cohort!r}.", slug="unknown-cohort", field="cohort")
    return memberships, members


def _calendar_facts(
    facts: list[Fact],
    spec: Dataset,
    strand: tuple[str, list[Fact], Cohort],
    window: tuple[date | None, date | None],
) -> list[Fact]:
    """The facts a calendar cohort table counts: each in a base period its person was a member
    in (for the cohort dataset itself, each membership in every base period it spans), within
    ``from`` and ``to``."""
    (cohort, memberships, members), (from_, to) = strand, window
    resolution = spec.time_resolution
    if spec.name == COHORT_DATASET:
        # Cohort size: each membership of the strand counts in every base period it spans.
        keys = {_key(f) for f in memberships if f.value == cohort}
        facts = membership_facts(
            [f for f in facts if _key(f) in keys], resolution, to or date.today()
        )
    facts = in_cohort(facts, members, resolution)
    if from_ is not None or to is not None:
        facts = [
            f
            for f in facts
            if f.start is not None
            and (from_ is None or f.start >= from_)
            and (to is None or f.start <= to)
        ]
    return facts


def _uncovered(
    conn: Connection,
    generation: int,
    spec: Dataset,
    scope: Slices,
    layer: str | None,
    facts: list[Fact],
    rule: Rule,
    people: bool,
    period_key: Callable[[Fact], Any] | None = None,
) -> set[tuple[str, str, Any]]:
    """The rows of a cohort's total table whose small cells in some breakdown have no cover:
    the same facts (records of the cohort's people), counted by each breakdown."""
    kept = {(f.provider, f.area, f.start, f.day, f.person, f.key) for f in facts}
    persons = {f.person for f in facts if f.person is not None}
    dims: list[list[Any]] = []
    for dim in cube.dims_of(spec)[1:]:
        facts_by = aggregate_rows(conn, generation, spec.name, scope, layer, dim, persons)
        same = [
            f for f in facts_by if (f.provider, f.area, f.start, f.day, f.person, f.key) in kept
        ]
        rows, who = fact_cells(same, people, dim, period_key)
        dims.append(list(who) if who is not None else list(rows))
    return uncovered_of(dims, rule.lattice().threshold, people)


def _key(fact: Fact) -> tuple[Any, ...]:
    return (fact.person, fact.day, fact.until, fact.provider)
