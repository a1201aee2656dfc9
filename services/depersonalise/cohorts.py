"""Cohorts of offender-cohort: each person's spans of membership of a strand, the facts of
members (in a base period they were members in), a cohort's size per period, and the columns of
a table relative to joining. Plain functions over plain data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from services.depersonalise.aggregates import Fact, Layout, area_index
from shared.periods import next_period, period_start

# How far either side of joining relative=joined counts, per period.
RELATIVE_REACH = {"month": 12, "quarter": 4}


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


def relative_month(fact: Fact, cohort: Cohort) -> int | None:
    """Months from the month the fact's person first joined to the fact's month."""
    joined = cohort.joined(fact.person)
    if joined is None or fact.day is None:
        return None
    return _months(fact.day) - _months(joined)


def relative_layout(
    areas: list[tuple[str, str]],
    parent_of: dict[str, str] | None,
    period: str,
    span: tuple[date | None, date | None],
) -> Layout:
    """Columns -reach … reach relative to joining; a base period is (calendar year, months since
    joining), so a relative quarter is the sum of its three relative months and ``from``/``to``
    take whole calendar years."""
    reach = RELATIVE_REACH[period]
    first, last = span

    def period_of(key: Any) -> int:
        start, months = key
        if (first is not None and start < first) or (last is not None and start > last):
            return -1
        offset = months if period == "month" else months // 3
        return offset + reach if -reach <= offset <= reach else -1

    labels = [str(offset) for offset in range(-reach, reach + 1)]
    return Layout(areas, area_index(areas, parent_of), labels, period_of)
