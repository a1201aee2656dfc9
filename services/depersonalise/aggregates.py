"""Complete area × period (× category) count tables under a dataset's disclosure rule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from services.depersonalise.service import period_start, periods_between
from services.depersonalise.suppression import PRIMARY, PUBLISHED, apply_rule
from shared.grants import Slices


@dataclass
class Rule:
    threshold: int
    round_to: int | None
    secondary: bool

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "round_to": self.round_to, "secondary": self.secondary}


WITHHELD = "withheld"


def granted_rows(
    rows: Iterable[tuple[str | None, date | None, str | None, str, date | None]],
    scope: Slices,
    by: str = "category",
) -> list[tuple[str | None, date | None, str | None]]:
    """(area, period start, category) to count: a record whose provider's grant, on the day it
    occurred, leaves the ``by`` field out is counted under ``withheld``."""
    out = []
    for area, start, category, provider, day in rows:
        shown = scope.fields_for(provider, day)
        if shown is None:
            continue
        out.append((area, start, category if by in shown else WITHHELD))
    return out


def aggregate(
    rows: Iterable[tuple[str | None, date | None, str | None]],
    areas: list[tuple[str, str]],
    period: str,
    rule: Rule,
    first: date | None = None,
    last: date | None = None,
    by_category: bool = False,
    population: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Count, suppress and lay out every cell; answer ``cells`` and ``disclosure``."""
    kept: list[tuple[str | None, date, str | None]] = []
    for area, day, category in rows:
        if day is None:
            continue
        if (first is None or day >= period_start(first, period)) and (last is None or day <= last):
            kept.append((area, day, category))
    days = [day for _, day, _ in kept]
    lo = first or (min(days) if days else None)
    hi = last or (max(days) if days else None)
    periods = periods_between(lo, hi, period) if lo and hi else []
    period_index = {start: i for i, (start, _) in enumerate(periods)}
    area_index = {code: i for i, (code, _) in enumerate(areas)}
    categories = sorted({c or "" for _, _, c in kept}) if by_category else [""]
    category_index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros((len(areas), len(periods), len(categories)), dtype=np.int64)
    outside = 0
    for area, day, category in kept:
        if area is None or area not in area_index:
            outside += 1
            continue
        p = period_index.get(period_start(day, period))
        if p is None:
            continue
        counts[area_index[area], p, category_index[(category or "") if by_category else ""]] += 1
    table = counts if by_category else counts[:, :, 0]
    outcome = apply_rule(table, rule.threshold, rule.round_to, rule.secondary)
    status = outcome.status if by_category else outcome.status[:, :, None]
    published = outcome.published if by_category else outcome.published[:, :, None]
    cells = []
    for a, (code, name) in enumerate(areas):
        people = population.get(code) if population else None
        for p, (_, label) in enumerate(periods):
            for c, category in enumerate(categories):
                cell: dict[str, Any] = {"area": code, "area_name": name, "period": label}
                if by_category:
                    cell["category"] = category
                state = status[a, p, c]
                if state == PUBLISHED:
                    cell["count"] = int(published[a, p, c])
                else:
                    cell["count"] = None
                    cell["suppressed"] = "primary" if state == PRIMARY else "secondary"
                if population is not None:
                    cell["rate"] = (
                        round(cell["count"] / people * 1000, 3)
                        if people and cell["count"] is not None
                        else None
                    )
                cells.append(cell)
    disclosure = {
        "cells": int(counts.size),
        "suppressed_primary": outcome.primary,
        "suppressed_secondary": outcome.secondary,
        "min_published": outcome.min_published,
        "records": len(kept) - outside,
        "records_outside_layer": outside,
    }
    return {"cells": cells, "disclosure": disclosure, "table": table, "status": outcome.status}
