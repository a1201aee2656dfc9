"""Complete area × period (× breakdown) count tables under a dataset's disclosure rule, for
calendar periods, cohorts and periods relative to joining a cohort."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, NamedTuple

import numpy as np

from services.depersonalise.service import next_period, period_start, periods_between
from services.depersonalise.suppression import PRIMARY, PUBLISHED, apply_rule
from shared.grants import Slices

ALL = "all"  # the one area of a table without geography
WITHHELD = "withheld"
# How far either side of joining relative=joined counts, per period.
RELATIVE_REACH = {"month": 12, "quarter": 4}


@dataclass
class Rule:
    threshold: int
    round_to: int | None
    secondary: bool

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "round_to": self.round_to, "secondary": self.secondary}

    def stricter(self, other: Rule) -> Rule:
        """The rule that suppresses at least what either does."""
        rounds = [r for r in (self.round_to, other.round_to) if r]
        return Rule(
            max(self.threshold, other.threshold),
            max(rounds) if rounds else None,
            self.secondary or other.secondary,
        )


class Fact(NamedTuple):
    """What depersonalise counts of one record (the person pseudonym never leaves it)."""

    area: str | None
    start: date | None  # period start at the dataset's resolution
    value: str | None  # the breakdown field's value
    provider: str
    day: date | None  # occurred_at's day: grants' windows and cohort membership
    until: date | None = None  # occurred_to's day (a cohort member's leaving)
    person: str | None = None
    key: int = 0  # the record's key (cellkey.py): key sums of cells
    person_key: int = 0


def granted_rows(facts: Iterable[Fact], scope: Slices, by: str = "category") -> list[Fact]:
    """The facts a grant covers; one whose provider's grant, on the day it occurred, leaves the
    ``by`` field out is counted under ``withheld``."""
    out = []
    for fact in facts:
        shown = scope.fields_for(fact.provider, fact.day)
        if shown is None:
            continue
        out.append(fact if by in shown else fact._replace(value=WITHHELD))
    return out


# --- cohorts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    """Person pseudonym → the (joined, left) spans of membership of one strand."""

    spans: dict[str, list[tuple[date, date | None]]]

    def member_between(self, person: str | None, first: date, last: date) -> bool:
        return any(
            joined <= last and (left is None or left >= first)
            for joined, left in self.spans.get(person or "", ())
        )

    def joined(self, person: str | None) -> date | None:
        spans = self.spans.get(person or "")
        return min(joined for joined, _ in spans) if spans else None


def cohort_of(memberships: Iterable[Fact], strand: str) -> Cohort:
    """The cohort named ``strand`` in offender-cohort facts (value = category)."""
    spans: dict[str, list[tuple[date, date | None]]] = defaultdict(list)
    for fact in memberships:
        if fact.value == strand and fact.person and fact.day:
            spans[fact.person].append((fact.day, fact.until))
    return Cohort(dict(spans))


def _period_end(start: date, period: str) -> date:
    return next_period(start, period) - timedelta(days=1)


def in_cohort(facts: Iterable[Fact], cohort: Cohort, period: str) -> list[Fact]:
    """Facts of people who were members at any time in the fact's period."""
    out = []
    for fact in facts:
        if fact.start is None:
            continue
        first = period_start(fact.start, period)
        if cohort.member_between(fact.person, first, _period_end(first, period)):
            out.append(fact)
    return out


def membership_facts(memberships: Iterable[Fact], period: str, last: date) -> list[Fact]:
    """A membership counted in every period it spans (up to ``last``): cohort size per period."""
    out = []
    for fact in memberships:
        if fact.day is None or fact.person is None:
            continue
        start = period_start(fact.day, period)
        end = min(fact.until or last, last)
        while start <= end:
            out.append(fact._replace(start=start))
            start = next_period(start, period)
    return out


def _months(day: date) -> int:
    return day.year * 12 + day.month - 1


def relative_facts(facts: Iterable[Fact], cohort: Cohort, period: str) -> list[tuple[Fact, int]]:
    """Each fact of a person who ever joined with its period relative to the joining month."""
    reach = RELATIVE_REACH[period]
    out = []
    for fact in facts:
        joined = cohort.joined(fact.person)
        if joined is None or fact.day is None:
            continue
        months = _months(fact.day) - _months(joined)
        offset = months if period == "month" else months // 3
        if -reach <= offset <= reach:
            out.append((fact, offset))
    return out


# --- tables -----------------------------------------------------------------------------------


class Placed(NamedTuple):
    """Records counted in one cell (``person`` None), or one person of a cell (count 0)."""

    area: str | None
    start: date | None  # period start at the dataset's resolution, or a day within it
    value: str
    tally: int  # records (0 for a person row)
    key_sum: int
    person: str | None = None
    person_key: int = 0
    slot: int | None = None  # the table's period column, once placed


def placed_facts(facts: Iterable[Fact], people: bool) -> Iterator[Placed]:
    """Each fact as one record (and, counting people, its person) of its cell."""
    for fact in facts:
        value = fact.value or ""
        yield Placed(fact.area, fact.start, value, 1, fact.key)
        if people and fact.person is not None:
            yield Placed(fact.area, fact.start, value, 0, 0, fact.person, fact.person_key)


def aggregate(
    rows: Iterable[Fact],
    areas: list[tuple[str, str]],
    period: str,
    rule: Rule,
    first: date | None = None,
    last: date | None = None,
    by: str | None = None,
    population: dict[str, float] | None = None,
    people: bool = False,
) -> dict[str, Any]:
    """Count facts by calendar period, suppress and lay out every cell."""
    kept = [
        fact
        for fact in rows
        if fact.start is not None
        and (first is None or fact.start >= period_start(first, period))
        and (last is None or fact.start <= last)
    ]
    return calendar_table(
        placed_facts(kept, people), areas, period, rule, first, last, by, population, people
    )


def calendar_table(
    rows: Iterable[Placed],
    areas: list[tuple[str, str]],
    period: str,
    rule: Rule,
    first: date | None,
    last: date | None,
    by: str | None,
    population: dict[str, float] | None,
    people: bool,
) -> dict[str, Any]:
    """The table of cells already within ``first``..``last``, by calendar period: the columns
    span the range asked, or the periods counted when it is open."""
    kept = [row for row in rows if row.start is not None]
    starts = {row.start for row in kept if row.start is not None}
    lo = first or (min(starts) if starts else None)
    hi = last or (max(starts) if starts else None)
    periods = periods_between(lo, hi, period) if lo and hi else []
    index = {start: i for i, (start, _) in enumerate(periods)}
    slots: dict[date, int | None] = {s: index.get(period_start(s, period)) for s in starts}
    labels = [label for _, label in periods]
    counted = tabulate(kept, areas, len(labels), by, people, slots)
    return _table(counted, areas, labels, rule, by, population)


def relative_aggregate(
    rows: list[tuple[Fact, int]],
    areas: list[tuple[str, str]],
    period: str,
    rule: Rule,
    by: str | None = None,
    people: bool = False,
) -> dict[str, Any]:
    """Count by period relative to joining (labels -reach … reach)."""
    reach = RELATIVE_REACH[period]
    placed = [
        row._replace(slot=offset + reach)
        for fact, offset in rows
        for row in placed_facts([fact], people)
    ]
    labels = [str(offset) for offset in range(-reach, reach + 1)]
    return _table(tabulate(placed, areas, len(labels), by, people), areas, labels, rule, by, None)


@dataclass
class Counts:
    """A table's counts and key sums (``[area, period, value]``, same shape), the values of its
    third axis, and the records counted inside and outside its areas."""

    counts: np.ndarray
    key_sums: np.ndarray
    values: list[str]
    records: int
    outside: int


def tabulate(
    placed: list[Placed],
    areas: list[tuple[str, str]],
    periods: int,
    by: str | None,
    people: bool,
    slots: dict[date, int | None] | None = None,
) -> Counts:
    """Counts and key sums by area × period × value (people: distinct people and the sum of
    their keys); a row's period column is its ``slot``, or ``slots[start]`` when given."""
    area_index = {code: i for i, (code, _) in enumerate(areas)}
    values = sorted({row.value for row in placed}) if by else [""]
    value_index = {c: i for i, c in enumerate(values)}
    shape = (len(areas), periods, len(values))
    records = outside = 0
    cells: list[tuple[int, int, int]] = []
    tallies: list[int] = []
    sums: list[int] = []
    seen: set[tuple[int, int, int, str]] = set()
    for row in placed:
        a = area_index.get(row.area) if row.area is not None else None
        if row.person is None:
            if a is None:
                outside += row.tally
                continue
            records += row.tally
        slot = row.slot if slots is None or row.start is None else slots[row.start]
        if a is None or slot is None:
            continue
        where = (a, slot, value_index[row.value] if by else 0)
        if row.person is not None:
            if people and (*where, row.person) not in seen:
                seen.add((*where, row.person))
                cells.append(where)
                tallies.append(1)
                sums.append(row.person_key)
        elif not people:
            cells.append(where)
            tallies.append(row.tally)
            sums.append(row.key_sum)
    counts = np.zeros(shape, dtype=np.int64)
    key_sums = np.zeros_like(counts)
    if cells:
        at = tuple(np.array(cells, dtype=np.int64).T)
        np.add.at(counts, at, np.array(tallies, dtype=np.int64))
        np.add.at(key_sums, at, np.array(sums, dtype=np.int64))
    return Counts(counts, key_sums, values, records, outside)


def _table(
    counted: Counts,
    areas: list[tuple[str, str]],
    labels: list[str],
    rule: Rule,
    by: str | None,
    population: dict[str, float] | None,
) -> dict[str, Any]:
    """Cells and disclosure figures of ``counts[area, period, value]`` (and ``key_sums``, the
    sums of the counted records' or people's keys, same shape) under the rule."""
    counts, values = counted.counts, counted.values
    table = counts if by else counts[:, :, 0]
    outcome = apply_rule(table, rule.threshold, rule.round_to, rule.secondary)
    # Nested lists (by: [area][period][value]; none: [area][period]) read faster than arrays.
    status, published = outcome.status.tolist(), outcome.published.tolist()
    cells = []
    for a, (code, name) in enumerate(areas):
        residents = population.get(code) if population else None
        for p, label in enumerate(labels):
            for c, value in enumerate(values):
                cell: dict[str, Any] = {"area": code, "area_name": name, "period": label}
                if by:
                    cell[by] = value
                state = status[a][p][c] if by else status[a][p]
                if state == PUBLISHED:
                    cell["count"] = int(published[a][p][c] if by else published[a][p])
                else:
                    cell["count"] = None
                    cell["suppressed"] = "primary" if state == PRIMARY else "secondary"
                if population is not None:
                    cell["rate"] = (
                        round(cell["count"] / residents * 1000, 3)
                        if residents and cell["count"] is not None
                        else None
                    )
                cells.append(cell)
    disclosure = {
        "cells": int(counts.size),
        "suppressed_primary": outcome.primary,
        "suppressed_secondary": outcome.secondary,
        "min_published": outcome.min_published,
        "records": counted.records,
        "records_outside_layer": counted.outside,
    }
    return {
        "cells": cells,
        "disclosure": disclosure,
        "table": table,
        "status": outcome.status,
        "key_sums": counted.key_sums,
    }
