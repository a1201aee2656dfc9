"""Complete area × period (× breakdown) count tables under a dataset's disclosure rule, for
calendar periods, cohorts and periods relative to joining a cohort."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
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
    """Count by calendar period, suppress and lay out every cell."""
    kept = [
        fact
        for fact in rows
        if fact.start is not None
        and (first is None or fact.start >= period_start(first, period))
        and (last is None or fact.start <= last)
    ]
    days = [fact.start for fact in kept if fact.start is not None]
    lo = first or (min(days) if days else None)
    hi = last or (max(days) if days else None)
    periods = periods_between(lo, hi, period) if lo and hi else []
    index = {start: i for i, (start, _) in enumerate(periods)}
    placed = [
        (fact, index.get(period_start(fact.start, period)))
        for fact in kept
        if fact.start is not None
    ]
    return _table(placed, areas, [label for _, label in periods], rule, by, population, people)


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
    placed: list[tuple[Fact, int | None]] = [(fact, offset + reach) for fact, offset in rows]
    labels = [str(offset) for offset in range(-reach, reach + 1)]
    return _table(placed, areas, labels, rule, by, None, people)


def _table(
    placed: list[tuple[Fact, int | None]],
    areas: list[tuple[str, str]],
    labels: list[str],
    rule: Rule,
    by: str | None,
    population: dict[str, float] | None,
    people: bool,
) -> dict[str, Any]:
    area_index = {code: i for i, (code, _) in enumerate(areas)}
    values = sorted({fact.value or "" for fact, _ in placed}) if by else [""]
    value_index = {c: i for i, c in enumerate(values)}
    counts = np.zeros((len(areas), len(labels), len(values)), dtype=np.int64)
    outside = 0
    seen: set[tuple[int, int, int, str]] = set()
    for fact, p in placed:
        if fact.area is None or fact.area not in area_index:
            outside += 1
            continue
        if p is None:
            continue
        where = (area_index[fact.area], p, value_index[(fact.value or "") if by else ""])
        if people:
            if fact.person is None or (*where, fact.person) in seen:
                continue
            seen.add((*where, fact.person))
        counts[where] += 1
    table = counts if by else counts[:, :, 0]
    outcome = apply_rule(table, rule.threshold, rule.round_to, rule.secondary)
    status = outcome.status if by else outcome.status[:, :, None]
    published = outcome.published if by else outcome.published[:, :, None]
    cells = []
    for a, (code, name) in enumerate(areas):
        residents = population.get(code) if population else None
        for p, label in enumerate(labels):
            for c, value in enumerate(values):
                cell: dict[str, Any] = {"area": code, "area_name": name, "period": label}
                if by:
                    cell[by] = value
                state = status[a, p, c]
                if state == PUBLISHED:
                    cell["count"] = int(published[a, p, c])
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
        "records": len(placed) - outside,
        "records_outside_layer": outside,
    }
    return {"cells": cells, "disclosure": disclosure, "table": table, "status": outcome.status}
