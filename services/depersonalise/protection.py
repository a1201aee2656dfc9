"""The canonical release lattice: every aggregates answer is a sum of protected base cells.

A *base cell* is a count of one provider's records in one base area (the finest layer of the
answer's layer family), one base period (the dataset's own time resolution) and one value of the
answer's breakdown (``""`` for the total). The dataset's rule is applied to base cells once, the
same way for every query, and an answer cell — a coarser period, a parent area, a union of
providers — is published only when **every** base cell in it is published; its value is then the
sum of those cells (rounded, or perturbed, as the rule says). Nothing a recipient can put
together from several answers therefore ever contains a suppressed base cell: answers with and
without a purpose, before and after a provider is suspended, for a month or for its quarter,
differ only by whole published base cells.

The total table and a ``by`` table share their rows (provider × base area × base period): a
row's total is the sum of its cells in every breakdown. So that one cannot be subtracted from the
other, a row of a breakdown with a suppressed cell gets one *cover* (its smallest published
non-zero cell, which is at least the threshold), and a row whose suppressed cells in some
breakdown have no cover (all its non-zero cells are small) has its total suppressed — and a cover
in every other breakdown too, so that no breakdown gives that total away as the sum of its cells.

Everything here is numpy over whole arrays (no Python loop per cell) and imports no web code: the
service, the tests and the benchmarks call :func:`release` directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.depersonalise.cellkey import KEY_RANGE, cell_key
from services.depersonalise.suppression import PRIMARY, apply_rule

NAME = "release-lattice"  # disclosure.protection of every aggregates answer


def _ints(values: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


@dataclass(frozen=True)
class Rows:
    """Rows (provider × base area × base period) as parallel integer arrays."""

    provider: np.ndarray
    area: np.ndarray
    period: np.ndarray
    FIELDS = ("provider", "area", "period")

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, int]]) -> Rows:
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return cls(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())

    def __len__(self) -> int:
        return len(self.provider)


@dataclass(frozen=True)
class Cells:
    """Non-zero base cells of one breakdown (or of the total), as parallel arrays.

    ``provider`` is any integer naming a provider; ``area`` the base area's index (-1: outside
    every area of the layer); ``period`` the base period's index; ``value`` the index of the
    breakdown's value (0 for the total); ``count`` the records (or distinct people); ``key_sum``
    the sum of their record keys (cellkey.py). A cell absent from the arrays is a published 0.
    """

    provider: np.ndarray
    area: np.ndarray
    period: np.ndarray
    value: np.ndarray
    count: np.ndarray
    key_sum: np.ndarray

    @classmethod
    def of(
        cls,
        counts: Mapping[tuple[int, int, int, int], int],
        key_sums: Mapping[tuple[int, int, int, int], int] | None = None,
    ) -> Cells:
        """Cells from ``{(provider, area, period, value): count}`` (hand-made tables)."""
        keys = list(counts)
        arr = np.asarray(keys, dtype=np.int64).reshape(-1, 4)
        sums = [(key_sums or {}).get(k, 0) for k in keys]
        return cls(
            arr[:, 0].copy(),
            arr[:, 1].copy(),
            arr[:, 2].copy(),
            arr[:, 3].copy(),
            _ints([counts[k] for k in keys]),
            _ints(sums),
        )

    def __len__(self) -> int:
        return len(self.count)

    @property
    def rows(self) -> Rows:
        return Rows(self.provider, self.area, self.period)


@dataclass(frozen=True)
class People:
    """Distinct people of base cells, for ``count=people``: person ``person[i]`` (an integer id)
    with key ``key[i]`` is counted in base cell ``cell[i]`` (an index into :class:`Cells`)."""

    cell: np.ndarray
    person: np.ndarray
    key: np.ndarray


@dataclass(frozen=True)
class Shape:
    """How an answer is made of base cells: ``area_of[base area]`` is the answer area holding it
    (-1: none of the answer's areas, counted outside the layer), ``period_of[base period]`` the
    answer period (-1: outside the range asked); ``values`` the breakdown's values (1 for the
    total)."""

    area_of: np.ndarray
    period_of: np.ndarray
    areas: int
    periods: int
    values: int = 1


@dataclass(frozen=True)
class Lattice:
    """The rule applied to base cells: counts 1..threshold-1 are suppressed; published values are
    rounded to ``round_to`` (the NHS rule) and/or given cell-key noise of at most
    ``perturbation``; ``hide_below`` (a caller's threshold above the rule's) hides published
    answer cells of 1..hide_below-1 as well, without changing the lattice."""

    threshold: int
    round_to: int | None = None
    perturbation: int | None = None
    hide_below: int | None = None


@dataclass
class Answer:
    """Cells ``[area, period, value]``: ``count`` (0 where suppressed) and ``suppressed``;
    ``records`` and ``outside`` (records inside and outside the answer's areas, within its periods)
    or None where they are not publishable; ``key`` each cell's key (cellkey.cell_key)."""

    count: np.ndarray
    suppressed: np.ndarray
    key: np.ndarray
    records: int | None
    outside: int | None

    @property
    def suppressed_cells(self) -> int:
        return int(self.suppressed.sum())

    @property
    def min_published(self) -> int | None:
        shown = self.count[~self.suppressed & (self.count > 0)]
        return int(shown.min()) if shown.size else None


def release(
    cells: Cells,
    shape: Shape,
    lattice: Lattice,
    *,
    breakdown: bool,
    uncovered: Rows | None = None,
    others: Sequence[Cells] = (),
    people: People | None = None,
) -> Answer:
    """The answer cells of one query from its base cells.

    ``cells`` are the base cells of the answer's breakdown (``breakdown`` true: one row holds a
    cell per value) or of the total (false). ``uncovered`` are the rows whose small cells in some
    breakdown have no cover (see :func:`uncovered_rows`); when None they are found from ``others``,
    the base cells of every breakdown of the dataset (each a :class:`Cells`). With ``people``,
    ``cells.count`` holds distinct people per base cell and an answer cell counts the distinct
    people of its base cells.
    """
    if uncovered is None:
        uncovered = uncovered_rows(others, lattice.threshold)
    hidden = base_suppressed(cells, lattice.threshold, breakdown, uncovered)
    return derive(cells, hidden, shape, lattice, people)


def uncovered_rows(dims: Sequence[Cells], threshold: int) -> Rows:
    """Rows whose total is at least ``threshold`` and in which some breakdown has small cells
    (1..threshold-1) that neither its published cells can cover (:func:`cover_need`) nor the
    total leaves free over the whole 1..threshold-1 (:func:`whole_intervals`; ``dims``: the base
    cells of each breakdown, not of the total)."""
    found: list[np.ndarray] = []
    for dim in dims:
        if not len(dim):
            continue
        keys, row = _row_index([dim.rows])
        small = (dim.count >= 1) & (dim.count < threshold)
        has_small = np.bincount(row, weights=small, minlength=len(keys)) > 0
        large = dim.count >= threshold
        has_large = np.bincount(row, weights=large, minlength=len(keys)) > 0
        gain = np.bincount(
            row, weights=np.where(large, dim.count - threshold, 0), minlength=len(keys)
        )
        need = cover_need(dim.count, small, row, len(keys), threshold)
        total = np.bincount(row, weights=dim.count, minlength=len(keys))
        cells = np.bincount(row, weights=dim.count > 0, minlength=len(keys))
        covered = has_large & (gain >= need)
        free = ~has_large & whole_intervals(total, cells, threshold)
        bad = has_small & (total >= threshold) & ~covered & ~free
        found.append(np.stack([dim.provider, dim.area, dim.period], axis=1)[_first_of(row)][bad])
    if not found:
        return Rows.of([])
    rows = np.unique(np.concatenate(found), axis=0)
    return Rows(rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())


def whole_intervals(total: np.ndarray, cells: np.ndarray, threshold: int) -> np.ndarray:
    """Whether ``cells`` small cells (each 1..threshold-1) known to sum to ``total`` leave each
    of them free over the whole 1..threshold-1: a row's total can then be published though its
    small cells have no cover."""
    return (total >= threshold - 2 + cells) & (total <= 1 + (cells - 1) * (threshold - 1))


def cover_need(
    count: np.ndarray, small: np.ndarray, row: np.ndarray, n_rows: int, threshold: int
) -> np.ndarray:
    """Per row, how far above the threshold its covers must reach together.

    Someone who knows the row's total, its published cells, and which of its suppressed cells
    are small (1..t-1) and which are covers (at least t) bounds every small cell above by
    ``Σ(small - 1) + 1 + Σ(cover - t)``. That bound must not fall below t-1, or the reader would
    learn that a small count is smaller than the rule says; so the covers must add
    ``t - 2 - Σ(small - 1)`` at least. With at least one cover no small cell is bounded below
    by more than 1 from the row alone, and no cover is ever determined."""
    spare = np.bincount(row, weights=np.where(small, count - 1, 0), minlength=n_rows)
    return (threshold - 2) - spare


def base_suppressed(cells: Cells, threshold: int, breakdown: bool, uncovered: Rows) -> np.ndarray:
    """Which base cells are suppressed: the small ones (1..threshold-1); in a breakdown, one cover
    per row that needs one; in the total, the totals of uncovered rows."""
    small = apply_rule(cells.count, threshold).status == PRIMARY
    if not len(cells):
        return small
    keys, row = _row_index([cells.rows, uncovered])
    n_rows = len(keys)
    row, loose = row[: len(cells)], row[len(cells) :]
    is_loose = np.zeros(n_rows, dtype=bool)
    is_loose[loose] = True
    if not breakdown:
        return small | is_loose[row]
    total = np.bincount(row, weights=cells.count, minlength=n_rows)
    has_small = np.bincount(row, weights=small, minlength=n_rows) > 0
    needs = (total >= threshold) & (has_small | is_loose)
    candidate = np.flatnonzero(~small & (cells.count > 0) & needs[row])
    hidden = small.copy()
    if candidate.size:
        # Covers from each row alone: its smallest published cells, as many as cover_need asks
        # (at least one; ties: the first value).
        order = candidate[
            np.lexsort((cells.value[candidate], cells.count[candidate], row[candidate]))
        ]
        rows = row[order]
        gain = (cells.count[order] - threshold).astype(np.float64)
        first = np.ones(order.size, dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        group = np.cumsum(first) - 1
        running = np.cumsum(gain)
        before = running - gain - (running - gain)[first][group]
        need = cover_need(cells.count, small, row, n_rows, threshold)
        hidden[order[first | (before < need[rows])]] = True
    return hidden


def derive(
    cells: Cells,
    hidden: np.ndarray,
    shape: Shape,
    lattice: Lattice,
    people: People | None = None,
) -> Answer:
    """Answer cells as sums of base cells: published only where none of their base cells is
    suppressed (strict derivation)."""
    n = shape.areas * shape.periods * shape.values
    out_shape = (shape.areas, shape.periods, shape.values)
    area = np.where(cells.area >= 0, shape.area_of[np.maximum(cells.area, 0)], -1)
    if len(cells):
        period = shape.period_of[cells.period]
    else:
        period = np.zeros(0, dtype=np.int64)
    in_range = period >= 0
    inside = in_range & (area >= 0)
    index = np.where(inside, (area * shape.periods + period) * shape.values + cells.value, 0)
    blocked = np.bincount(index[inside], weights=hidden[inside], minlength=n) > 0
    if people is None:
        exact = np.bincount(index[inside], weights=cells.count[inside], minlength=n)
        keys = np.bincount(index[inside], weights=cells.key_sum[inside], minlength=n)
    else:
        exact, keys = _distinct(index, inside, people, n)
    exact = exact.astype(np.int64)
    keys = keys.astype(np.int64) % KEY_RANGE
    shown = _value(exact, keys, lattice)
    suppressed = blocked.copy()
    if lattice.hide_below is not None and lattice.hide_below > lattice.threshold:
        suppressed |= (exact >= 1) & (exact < lattice.hide_below)
    count = np.where(suppressed, 0, shown)
    records = outside = None
    if not suppressed.any() and people is None:
        records = _single(cells.count[inside], cells.key_sum[inside], lattice)
        out = in_range & (area < 0)
        if not hidden[out].any():
            outside = _single(cells.count[out], cells.key_sum[out], lattice)
    return Answer(
        count.reshape(out_shape),
        suppressed.reshape(out_shape),
        keys.reshape(out_shape),
        records,
        outside,
    )


def _distinct(
    index: np.ndarray, inside: np.ndarray, people: People, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct people per answer cell and the sum of their keys."""
    kept = inside[people.cell]
    pairs = np.stack([index[people.cell][kept], people.person[kept]], axis=1)
    if not len(pairs):
        return np.zeros(n), np.zeros(n)
    unique, first = np.unique(pairs, axis=0, return_index=True)
    keys = people.key[kept][first]
    return (
        np.bincount(unique[:, 0], minlength=n).astype(np.float64),
        np.bincount(unique[:, 0], weights=keys, minlength=n),
    )


def _single(counts: np.ndarray, key_sums: np.ndarray, lattice: Lattice) -> int:
    exact = np.asarray([int(counts.sum())], dtype=np.int64)
    key = np.asarray([cell_key(int(key_sums.sum()))], dtype=np.int64)
    return int(_value(exact, key, lattice)[0])


def noise(key: np.ndarray, largest: int) -> np.ndarray:
    """Cell-key noise in -largest..largest: a fixed function of the cell's key (0..255), so the
    same records get the same noise in every answer; no recipient knows a key."""
    mixed = (np.asarray(key, dtype=np.int64) * 167 + 89) % KEY_RANGE
    return mixed % (2 * largest + 1) - largest


def _value(exact: np.ndarray, key: np.ndarray, lattice: Lattice) -> np.ndarray:
    """A published cell's value: perturbed (never below 0; zeros stay 0), then rounded."""
    value = exact.copy()
    if lattice.perturbation:
        value = np.where(exact > 0, np.maximum(exact + noise(key, lattice.perturbation), 0), 0)
    if lattice.round_to:
        value = apply_rule(value, lattice.threshold, lattice.round_to).published
    return value


def _row_index(parts: Sequence[Rows]) -> tuple[np.ndarray, np.ndarray]:
    """Row keys of several row sets numbered together: (distinct keys, row number of each)."""
    kept = [p for p in parts if len(p)]
    if not kept:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    provider, area, period = (np.concatenate([getattr(p, f) for p in kept]) for f in Rows.FIELDS)
    spans = [int(v.max() - v.min()) + 1 for v in (provider, area, period)]
    key = ((provider - provider.min()) * spans[1] + (area - area.min())) * spans[2] + (
        period - period.min()
    )
    keys, row = np.unique(key, return_inverse=True)
    return keys, row.reshape(-1)


def _first_of(row: np.ndarray) -> np.ndarray:
    """For each row number 0..max (all present), the position of its first occurrence."""
    return np.unique(row, return_index=True)[1]
