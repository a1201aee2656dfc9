"""A table's base cells and its uncovered rows, read from the count cube at once.

cube.py holds what a record adds to the cube, its writes and recount, and the cube's plain cell
reads; this module holds the read of a whole table for the release lattice: its base cells as
columns (:class:`BaseCells`, no tuple per cell) and the rows whose small cells lack a cover,
found by the database (:func:`read_table`): each total's stored cover flag, or where it has none
at the threshold asked, a probe of its breakdowns (cover_flags.py). A national table's 400,000
cells are never a tuple each: the driver's rows are taken apart by column and factorised in C
(pandas).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import case, literal, select
from sqlalchemy.engine import Connection

from services.depersonalise.cover_flags import plan_probes, stored_or_probed
from services.depersonalise.cube import (
    T_CELL,
    TOTAL,
    BaseRow,
    Query,
    as_date,
    dims_of,
    fetch,
    read_base,
    segment_bases,
    where_cells,
)
from shared.catalogue import Dataset
from shared.grants import Slices

Uncovered = set[tuple[str, str, date]]  # rows (provider, area, period start)


@dataclass(frozen=True)
class BaseCells:
    """Base cells as columns: each of provider, area, period and value a code per cell into its
    names (factorised), with each cell's count and key sum."""

    provider: np.ndarray
    providers: list[str]
    area: np.ndarray
    areas: list[str]
    period: np.ndarray
    periods: list[date]
    value: np.ndarray
    values: list[str]
    count: np.ndarray
    key_sum: np.ndarray

    def __len__(self) -> int:
        return len(self.count)

    @classmethod
    def of_rows(cls, rows: Sequence[BaseRow]) -> BaseCells:
        """Cells from (provider, area, period start, value, count, keys) tuples."""
        if not rows:
            return cls.concat([])
        provider, area, period, value, count, keys = zip(*rows, strict=True)
        coded = [_factorised(column) for column in (provider, area, period, value)]
        return cls(
            *coded[0],
            *coded[1],
            *coded[2],
            *coded[3],
            np.asarray(count, dtype=np.int64),
            np.asarray(keys, dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[BaseCells]) -> BaseCells:
        """The cells of several reads (one per grant segment), their names merged."""
        if len(parts) == 1:
            return parts[0]
        columns: list[Any] = []
        for codes, names in (
            ("provider", "providers"),
            ("area", "areas"),
            ("period", "periods"),
            ("value", "values"),
        ):
            merged: dict[Any, int] = {}
            coded = []
            for part in parts:
                remap = np.fromiter(
                    (merged.setdefault(n, len(merged)) for n in getattr(part, names)),
                    dtype=np.int64,
                    count=len(getattr(part, names)),
                )
                coded.append(remap[getattr(part, codes)])
            columns += [_joined(coded), list(merged)]
        counts = [_joined([p.count for p in parts]), _joined([p.key_sum for p in parts])]
        return cls(*columns, *counts)


def _factorised(column: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    codes, uniques = pd.factorize(pd.Series(column, dtype=object))
    return np.asarray(codes, dtype=np.int64), list(uniques)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def read_table(
    conn: Connection, query: Query, spec: Dataset, scope: Slices, threshold: int
) -> tuple[BaseCells, Uncovered]:
    """A query's base cells and its uncovered rows (cube.read_base, :func:`read_uncovered`).
    A total table reads both at once: each total cell with whether its row is uncovered, the
    breakdowns probed only for the totals at or above the threshold."""
    if query.by is not None:
        rows = list(read_base(conn, query, spec, scope))
        return BaseCells.of_rows(rows), read_uncovered(conn, query, spec, scope, threshold)
    parts: list[BaseCells] = []
    found: Uncovered = set()
    plan_probes(conn)
    for base, (_withheld, (lo, hi)) in segment_bases(query, spec, scope):
        provider = base["provider"]
        statement = total_select(base, spec, threshold, lo, hi)
        cells, loose = _total_cells(fetch(conn, statement), provider)
        parts.append(cells)
        found |= loose
    return BaseCells.concat(parts), found


def total_select(
    base: dict[str, Any], spec: Dataset, threshold: int, lo: date | None, hi: date | None
) -> Any:
    """Each total cell of one grant segment (area, at, count, key sum) with whether its row is
    uncovered (1) or not (0): on PostgreSQL an index-only scan of the cube's key, the probes
    too (its key INCLUDEs count and key_sum)."""
    total, lacking = _totals(base, spec, threshold)
    t = total.c
    flag = literal(0) if lacking is None else case(((t.count >= threshold) & lacking, 1), else_=0)
    return select(t.area, t.at, t.count, t.key_sum, flag).where(
        where_cells(total, _key(base), False, lo, hi)
    )


def _total_cells(rows: list[tuple[Any, ...]], provider: str) -> tuple[BaseCells, Uncovered]:
    """One provider's total cells from (area, at, count, key sum, uncovered) rows, by column: each
    column factorised in C (pandas), only the distinct areas and periods made names."""
    if not rows:
        return BaseCells.of_rows([]), set()
    area, at, count, keys, flag = zip(*rows, strict=True)
    area_codes, areas = _factorised(area)
    period_codes, periods = _factorised(at)
    periods = [as_date(p) or p for p in periods]
    zeros = np.zeros(len(rows), dtype=np.int64)
    cells = BaseCells(
        zeros,
        [provider],
        area_codes,
        areas,
        period_codes,
        periods,
        zeros,
        [""],
        np.asarray(count, dtype=np.int64),
        np.asarray(keys, dtype=np.int64),
    )
    marked = np.flatnonzero(np.asarray(flag, dtype=np.int64) == 1)
    loose = {
        (provider, areas[a], periods[p])
        for a, p in zip(area_codes[marked].tolist(), period_codes[marked].tolist(), strict=True)
    }
    return cells, loose


def read_uncovered(
    conn: Connection, query: Query, spec: Dataset, scope: Slices, threshold: int
) -> Uncovered:
    """Rows (provider, area, period start) whose total is at least ``threshold`` while some
    breakdown has small cells that neither its cells at or above the threshold can cover
    (protection.cover_need) nor the total leaves free (protection.whole_intervals):
    protection.uncovered_rows, in SQL (:func:`_lacking`)."""
    found: Uncovered = set()
    plan_probes(conn)
    for base, (_withheld, (lo, hi)) in segment_bases(query, spec, scope):
        total, lacking = _totals(base, spec, threshold)
        if lacking is None:
            continue
        t = total.c
        rows = conn.execute(
            select(t.area, t.at).where(
                where_cells(total, _key(base), False, lo, hi) & (t.count >= threshold) & lacking
            )
        ).all()
        found.update((base["provider"], area, as_date(at) or at) for area, at in rows)
    return found


def _key(base: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in base.items() if k != "dim"}, "dim": TOTAL}


def _totals(base: dict[str, Any], spec: Dataset, threshold: int) -> tuple[Any, Any]:
    """The total cells' table and whether a total's row lacks a cover in some breakdown (None
    when the dataset has no breakdown): its stored flag (cover_flags.py), or one probe of the
    cube's key per breakdown, in turn, until one lacks it."""
    total = T_CELL.alias("total")
    key = {k: v for k, v in _key(base).items() if k != "dim"}
    return total, stored_or_probed(total, key, dims_of(spec), threshold)
