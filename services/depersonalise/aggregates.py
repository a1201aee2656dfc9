"""Complete area × period (× breakdown) count tables, for calendar periods, cohorts and periods
relative to joining a cohort: base cells laid out as an answer under the release lattice
(protection.py). Cohort membership and the relative layout are ``cohorts.py``; the answer's
cells and their JSON, ``cell_table.py``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from services.depersonalise import cube, protection
from services.depersonalise.base_cells import BaseCells
from services.depersonalise.cell_table import CellTable, paused_collector
from services.depersonalise.service import period_start, periods_between
from shared.grants import Slices

ALL = "all"  # the one area of a table without geography
WITHHELD = "withheld"


@dataclass
class Rule:
    """A dataset's disclosure rule as an answer applies it: ``threshold`` is what the answer
    shows (the caller's, when higher), ``base`` the rule's own threshold, which alone decides the
    lattice of base cells (so a caller's threshold only hides more of the same cells)."""

    threshold: int
    round_to: int | None
    secondary: bool
    perturbation: int | None = None  # cell-key noise of at most this much, or none
    base: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "round_to": self.round_to,
            "secondary": self.secondary,
            "perturbation": self.perturbation_dict(),
        }

    def perturbation_dict(self) -> dict[str, Any] | None:
        if not self.perturbation:
            return None
        return {"method": "cell-key", "max": self.perturbation}

    def lattice(self) -> protection.Lattice:
        base = self.base or self.threshold
        return protection.Lattice(base, self.round_to, self.perturbation, self.threshold)

    def stricter(self, other: Rule) -> Rule:
        """The rule that suppresses at least what either does."""
        rounds = [r for r in (self.round_to, other.round_to) if r]
        noise = [n for n in (self.perturbation, other.perturbation) if n]
        return Rule(
            max(self.threshold, other.threshold),
            max(rounds) if rounds else None,
            self.secondary or other.secondary,
            max(noise) if noise else None,
            max(self.base or self.threshold, other.base or other.threshold),
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


def whole_granted(
    facts: Iterable[Fact], scope: Slices, resolution: str, by: str | None
) -> list[Fact]:
    """The facts in base periods that one of their provider's grant segments covers whole (as
    the cube's reads count them); ``withheld`` where that segment's grant leaves ``by`` out."""
    spans: dict[str, list[tuple[date | None, date | None, Any]]] = defaultdict(list)
    for segment in cube.segments(scope):
        span = cube.whole_periods(segment, resolution, None, None)
        if span is not None:
            spans[segment.provider].append((*span, segment.shown))
    out = []
    for fact in facts:
        if fact.start is None:
            continue
        for lo, hi, shown in spans.get(fact.provider, ()):
            if (lo is None or fact.start >= lo) and (hi is None or fact.start <= hi):
                out.append(fact if by is None or by in shown else fact._replace(value=WITHHELD))
                break
    return out


def fact_cells(
    facts: Iterable[Fact],
    people: bool,
    by: str | None,
    period_key: Callable[[Fact], Any] | None = None,
) -> tuple[list[BaseRow], list[PersonRow] | None]:
    """Base cells (provider, area, base period, value; ``""`` without ``by``) of facts: records
    and key sums, or with ``people`` one row per distinct person of a cell. ``period_key`` names
    a fact's base period (its start by default)."""
    counted: dict[tuple[str, str, Any, str], list[int]] = defaultdict(lambda: [0, 0])
    seen: dict[tuple[str, str, Any, str, str], int] = {}
    for fact in facts:
        where = (
            fact.provider,
            fact.area or "",
            fact.start if period_key is None else period_key(fact),
            (fact.value or "") if by else "",
        )
        if people:
            if fact.person is not None:
                seen.setdefault((*where, fact.person), fact.person_key)
            continue
        held = counted[where]
        held[0] += 1
        held[1] += fact.key
    if people:
        return [], [(*k[:4], k[4], key) for k, key in seen.items()]
    return [(*k, n, keys) for k, (n, keys) in counted.items()], None


# --- tables ---------------------------------------------------------------------------------

BaseRow = tuple[str, str, Any, str, int, int]  # provider, base area, base period, value, n, keys
PersonRow = tuple[str, str, Any, str, str, int]  # provider, base area, base period, value, who, key


@dataclass(frozen=True)
class Layout:
    """How an answer is made of base cells: its areas, each base area's answer area
    (``area_of``; absent: outside the answer's areas), its period labels, and the answer period
    of a base period (``period_of``; -1: outside the range asked)."""

    areas: list[tuple[str, str]]
    area_of: dict[str, int]
    labels: list[str]
    period_of: Callable[[Any], int]


def calendar_layout(
    areas: list[tuple[str, str]],
    parent_of: dict[str, str] | None,
    period: str,
    resolution: str,
    span: tuple[date | None, date | None],
    starts: Iterable[date],
) -> Layout:
    """Calendar columns spanning the range asked (or the base periods counted when it is open),
    each made of the base periods (``resolution``) inside it; ``parent_of`` maps base areas to
    the answer's areas (None: the answer's layer is its own base)."""
    first, last = span
    seen = list(starts)
    lo = first or (period_start(min(seen), period) if seen else None)
    hi = last or (max(seen) if seen else None)
    periods = periods_between(lo, hi, period) if lo and hi else []
    index = {start: i for i, (start, _) in enumerate(periods)}
    low = lo or date.max
    high = hi or date.min

    def period_of(start: Any) -> int:
        if not low <= start <= high:
            return -1
        return index.get(period_start(start, period), -1)

    del resolution  # base periods nest in every coarser calendar period (coarser_or_equal)
    return Layout(areas, area_index(areas, parent_of), [label for _, label in periods], period_of)


def area_index(areas: list[tuple[str, str]], parent_of: dict[str, str] | None) -> dict[str, int]:
    """Each base area's answer area (by index); the answer's own areas without ``parent_of``."""
    own = {code: i for i, (code, _) in enumerate(areas)}
    if parent_of is None:
        return own
    return {child: own[parent] for child, parent in parent_of.items() if parent in own}


def lattice_table(
    base: Iterable[BaseRow],
    layout: Layout,
    rule: Rule,
    by: str | None,
    population: dict[str, float] | None = None,
    uncovered: Iterable[tuple[str, str, Any]] = (),
    people: Iterable[PersonRow] | None = None,
    described: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer's cells and disclosure figures from its base cells, under the release lattice
    (protection.py): ``uncovered`` rows have their totals suppressed (and a cover in a breakdown);
    with ``people`` the base cells count distinct people and ``base`` is not read."""
    answer, values = lattice_answer(base, layout, rule, by, uncovered, people)
    return laid_out(answer, layout, values, by, population, rule, described or {})


def lattice_answer(
    base: Iterable[BaseRow] | BaseCells,
    layout: Layout,
    rule: Rule,
    by: str | None,
    uncovered: Iterable[tuple[str, str, Any]] = (),
    people: Iterable[PersonRow] | None = None,
) -> tuple[protection.Answer, list[str]]:
    """:func:`lattice_table`'s answer before it is laid out, with the breakdown's values."""
    names = _Names()
    with paused_collector():
        if people is not None:
            cells, who = _people_cells(list(people), names, by)
        else:
            read = base if isinstance(base, BaseCells) else BaseCells.of_rows(list(base))
            cells, who = _record_cells(read, names, by), None
    rows = list(uncovered)
    loose = protection.Rows(
        names.ids("provider", [r[0] for r in rows]),
        names.ids("area", [r[1] for r in rows]),
        names.ids("period", [r[2] for r in rows]),
    )
    values = names.listed("value") if by else [""]
    shape = protection.Shape(
        np.array([layout.area_of.get(a, -1) for a in names.listed("area")], dtype=np.int64),
        np.array([layout.period_of(p) for p in names.listed("period")], dtype=np.int64),
        len(layout.areas),
        len(layout.labels),
        len(values),
    )
    answer = protection.release(
        cells, shape, rule.lattice(), breakdown=by is not None, uncovered=loose, people=who
    )
    return answer, values


def also_blocked(
    answer: protection.Answer, values: list[str], other: protection.Answer, its: list[str]
) -> protection.Answer:
    """``answer`` with every cell suppressed that ``other`` (the same cells counted from another
    layer nested in the answer's) suppresses: a parent area is published only if no nested
    layer's answer would hide a part of it."""
    index = {v: i for i, v in enumerate(values)}
    blocked = np.zeros_like(answer.suppressed)
    for j, value in enumerate(its):
        if value in index:
            blocked[:, :, index[value]] |= other.suppressed[:, :, j]
    suppressed = answer.suppressed | blocked
    whole = not suppressed.any()
    return protection.Answer(
        np.where(suppressed, 0, answer.count),
        suppressed,
        answer.key,
        answer.records if whole else None,
        answer.outside if whole else None,
    )


def uncovered_of(
    dims: Iterable[list[Any]], threshold: int, people: bool = False
) -> set[tuple[str, str, Any]]:
    """protection.uncovered_rows of base cells given by provider, area and period names (one
    list per breakdown): what base_cells.read_uncovered finds in SQL, for cells counted in Python.
    With ``people`` the lists hold people (a row's total is then taken as the sum of its cells,
    at least its distinct people: more rows are found, never fewer)."""
    names = _Names()
    cells = [
        _people_cells(rows, names, "value")[0]
        if people
        else _record_cells(BaseCells.of_rows(rows), names, "value")
        for rows in dims
    ]
    loose = protection.uncovered_rows(cells, threshold)
    providers, areas, periods = (names.listed(k) for k in ("provider", "area", "period"))
    return {
        (providers[p], areas[a], periods[t])
        for p, a, t in zip(loose.provider, loose.area, loose.period, strict=True)
    }


class _Names:
    """Integer ids of providers, areas, periods and values, numbered as they are first seen
    (values: in sorted order once all are known)."""

    def __init__(self) -> None:
        self.known: dict[str, dict[Any, int]] = defaultdict(dict)

    def ids(self, kind: str, items: list[Any]) -> np.ndarray:
        if not items:
            return np.zeros(0, dtype=np.int64)
        # Factorised in C first: only the distinct items go through the dict.
        codes, uniques = pd.factorize(pd.Series(items, dtype=object))
        known = self.known[kind]
        mapped = np.fromiter(
            (known.setdefault(u, len(known)) for u in uniques), dtype=np.int64, count=len(uniques)
        )
        return mapped[codes]

    def listed(self, kind: str) -> list[Any]:
        return list(self.known[kind])

    def sorted_ids(self, distinct: list[str]) -> np.ndarray:
        """Distinct values numbered in sorted order (each value's id, in ``distinct``'s order)."""
        self.known["value"] = {v: i for i, v in enumerate(sorted(distinct))}
        known = self.known["value"]
        return np.fromiter((known[v] for v in distinct), dtype=np.int64, count=len(distinct))

    def sorted_values(self, values: list[str]) -> np.ndarray:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=True)
        self.known["value"] = {v: i for i, v in enumerate(uniques.tolist())}
        return np.asarray(codes, dtype=np.int64)


def _record_cells(base: BaseCells, names: _Names, by: str | None) -> protection.Cells:
    if not len(base):
        return protection.Cells.of({})
    # Only each column's distinct names go through the dicts; the cells take their codes.
    return protection.Cells(
        names.ids("provider", base.providers)[base.provider],
        names.ids("area", base.areas)[base.area],
        names.ids("period", base.periods)[base.period],
        names.sorted_ids(base.values)[base.value] if by else np.zeros(len(base), dtype=np.int64),
        base.count,
        base.key_sum,
    )


def _people_cells(
    rows: list[PersonRow], names: _Names, by: str | None
) -> tuple[protection.Cells, protection.People]:
    """Base cells counting distinct people (one row per person and base cell)."""
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return protection.Cells.of({}), protection.People(empty, empty, empty)
    provider, area, period, value, person, keys = zip(*rows, strict=True)
    columns = np.stack(
        [
            names.ids("provider", list(provider)),
            names.ids("area", list(area)),
            names.ids("period", list(period)),
            names.sorted_values(list(value)) if by else np.zeros(len(rows), dtype=np.int64),
        ],
        axis=1,
    )
    cells, cell_of = np.unique(columns, axis=0, return_inverse=True)
    cell_of = cell_of.reshape(-1)
    key = np.asarray(keys, dtype=np.int64)
    who = names.ids("person", list(person))
    # A person is counted once per base cell (the cube holds one row per person and cell).
    pairs, first = np.unique(np.stack([cell_of, who], axis=1), axis=0, return_index=True)
    counted = np.bincount(pairs[:, 0], minlength=len(cells))
    summed = np.bincount(pairs[:, 0], weights=key[first], minlength=len(cells)).astype(np.int64)
    base = protection.Cells(
        cells[:, 0].copy(),
        cells[:, 1].copy(),
        cells[:, 2].copy(),
        cells[:, 3].copy(),
        counted.astype(np.int64),
        summed,
    )
    return base, protection.People(cell_of, who, key)


def laid_out(
    answer: protection.Answer,
    layout: Layout,
    values: list[str],
    by: str | None,
    population: dict[str, float] | None,
    rule: Rule,
    described: dict[str, Any],
) -> dict[str, Any]:
    cells = CellTable(layout.areas, layout.labels, by, values, answer, population)
    disclosure = {
        "cells": int(answer.count.size),
        "suppressed": answer.suppressed_cells,
        "suppressed_primary": None,
        "suppressed_secondary": None,
        "min_published": answer.min_published,
        "records": answer.records,
        "records_outside_layer": answer.outside,
        "protection": protection.NAME,
        "protected": {
            "base_period": described.get("base_period"),
            "base_layer": described.get("base_layer"),
            "per_provider": True,
            "cover": True,
            "rounded_to": rule.round_to,
            "perturbation": rule.perturbation_dict(),
        },
    }
    return {"cells": cells, "disclosure": disclosure, "key": answer.key}
