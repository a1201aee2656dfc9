"""Disclosure control for complete count tables: primary and secondary suppression, rounding.

Primary: counts 1..t-1 are suppressed. Secondary: anyone may know the total of every line of the
table (a row, a column, or a line across categories — from another release at a coarser level),
so a suppressed cell must not be the unique solution of those totals. Two steps, to a fixpoint:

1. every line holding a suppressed cell holds at least two (the smallest published cell, preferring
   a non-zero one, is added);
2. no suppressed cell is determined by the line totals: for a 2-D table the suppressed cells are
   edges of the bipartite row–column graph and a cell is determined exactly when its edge is a
   bridge (on no cycle); for more dimensions, when its unit vector lies in the row space of the
   line–cell incidence matrix (found with one sparse least-squares projection). A determined cell
   gets a complementary cell that closes a cycle through it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import lsqr

PUBLISHED, PRIMARY, SECONDARY = 0, 1, 2


@dataclass
class Suppressed:
    status: np.ndarray
    published: np.ndarray

    @property
    def primary(self) -> int:
        return int((self.status == PRIMARY).sum())

    @property
    def secondary(self) -> int:
        return int((self.status == SECONDARY).sum())

    @property
    def min_published(self) -> int | None:
        shown = self.published[(self.status == PUBLISHED) & (self.published > 0)]
        return int(shown.min()) if shown.size else None


def apply_rule(
    counts: np.ndarray, threshold: int, round_to: int | None = None, secondary: bool = True
) -> Suppressed:
    """Suppress and round a complete table of counts (any number of dimensions)."""
    counts = np.asarray(counts, dtype=np.int64)
    status = np.where((counts >= 1) & (counts < threshold), PRIMARY, PUBLISHED).astype(np.int8)
    if secondary and (status == PRIMARY).any():
        status = secondary_suppression(counts, status)
    published = counts.copy()
    if round_to:
        published = (np.floor(counts / round_to + 0.5) * round_to).astype(np.int64)
    return Suppressed(status, published)


def secondary_suppression(counts: np.ndarray, status: np.ndarray) -> np.ndarray:
    status = status.copy()
    for _ in range(counts.size + 1):
        changed = _two_per_line(counts, status)
        determined = _determined_cells(status)
        for cell in determined:
            if status[cell] == PUBLISHED:
                continue
            complement = _complement(counts, status, cell)
            if complement is not None:
                status[complement] = SECONDARY
                changed = True
        if not changed:
            return status
    return status


def _smallest(values: np.ndarray, candidates: np.ndarray) -> int | None:
    """Position of the smallest candidate value, a non-zero one first."""
    positions = np.flatnonzero(candidates)
    if positions.size == 0:
        return None
    chosen = values[positions]
    nonzero = chosen > 0
    if nonzero.any():
        positions, chosen = positions[nonzero], chosen[nonzero]
    return int(positions[np.argmin(chosen)])


def _two_per_line(counts: np.ndarray, status: np.ndarray) -> bool:
    changed = False
    for _ in range(counts.size + 1):
        round_changed = False
        for axis, size in enumerate(counts.shape):
            if size < 2:
                continue
            hidden = (status != PUBLISHED).sum(axis=axis)
            for fixed in zip(*np.nonzero(hidden == 1), strict=True):
                index: list[int | slice] = [int(v) for v in fixed]
                index.insert(axis, slice(None))
                line = tuple(index)
                line_status = status[line]
                if (line_status != PUBLISHED).sum() != 1:
                    continue
                pick = _smallest(counts[line], line_status == PUBLISHED)
                if pick is None:
                    continue
                index[axis] = pick
                status[tuple(index)] = SECONDARY
                round_changed = changed = True
        if not round_changed:
            break
    return changed


def _determined_cells(status: np.ndarray) -> list[tuple[int, ...]]:
    if status.ndim == 2:
        return _bridges(status)
    return _determined_by_rank(status)


def _bridges(status: np.ndarray) -> list[tuple[int, ...]]:
    """Suppressed cells whose row–column edge is a bridge of the bipartite graph."""
    rows, cols = np.nonzero(status != PUBLISHED)
    n_rows = status.shape[0]
    if status.shape[0] < 2 or status.shape[1] < 2:
        return []
    adjacency: dict[int, list[tuple[int, int]]] = {}
    for edge, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        adjacency.setdefault(r, []).append((n_rows + c, edge))
        adjacency.setdefault(n_rows + c, []).append((r, edge))
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    found: list[tuple[int, ...]] = []
    counter = 0
    for root in adjacency:
        if root in order:
            continue
        order[root] = low[root] = counter
        counter += 1
        stack: list[tuple[int, int, int]] = [(root, -1, 0)]
        while stack:
            vertex, parent_edge, position = stack[-1]
            neighbours = adjacency[vertex]
            if position < len(neighbours):
                stack[-1] = (vertex, parent_edge, position + 1)
                nxt, edge = neighbours[position]
                if edge == parent_edge:
                    continue
                if nxt in order:
                    low[vertex] = min(low[vertex], order[nxt])
                else:
                    order[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append((nxt, edge, 0))
            else:
                stack.pop()
                if stack:
                    up = stack[-1][0]
                    low[up] = min(low[up], low[vertex])
                    if low[vertex] > order[up]:
                        found.append((int(rows[parent_edge]), int(cols[parent_edge])))
    return found


def _determined_by_rank(status: np.ndarray) -> list[tuple[int, ...]]:
    """Suppressed cells whose value follows from the line totals (any number of dimensions).

    A cell is free exactly when some vector of the null space of the line–cell incidence matrix
    moves it. The projection of a random vector onto that null space moves every free cell (with
    probability one), so one sparse least-squares solve (LSQR) classifies all cells at once. A
    numerically tiny component counts as determined, which can only add suppression.
    """
    cells = np.argwhere(status != PUBLISHED)
    if len(cells) == 0:
        return []
    rows: list[int] = []
    cols: list[int] = []
    n_lines = 0
    for axis, size in enumerate(status.shape):
        if size < 2:
            continue
        keys = np.delete(cells, axis, axis=1)
        _, line_of = np.unique(keys, axis=0, return_inverse=True)
        rows.extend((line_of.ravel() + n_lines).tolist())
        cols.extend(range(len(cells)))
        n_lines += int(line_of.max()) + 1
    if n_lines == 0:
        return []
    incidence = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_lines, len(cells)))
    probe = np.random.default_rng(len(cells)).standard_normal(len(cells))
    dual = lsqr(incidence.T, probe, atol=1e-10, btol=1e-10, iter_lim=20 * n_lines)[0]
    free = np.abs(probe - incidence.T @ dual) > 1e-6
    return [tuple(int(v) for v in cells[j]) for j in np.flatnonzero(~free)]


def _complement(
    counts: np.ndarray, status: np.ndarray, cell: tuple[int, ...]
) -> tuple[int, ...] | None:
    """A published cell whose suppression puts ``cell`` on a cycle of suppressed cells."""
    if status.ndim == 2:
        preferred = _cycle_closing_cells(status, cell)
        pick = _smallest(counts.ravel(), preferred.ravel())
        if pick is not None:
            return tuple(int(v) for v in np.unravel_index(pick, counts.shape))
    best: tuple[int, ...] | None = None
    best_value: tuple[bool, int] | None = None
    for axis, size in enumerate(counts.shape):
        if size < 2:
            continue
        index: list[int | slice] = list(cell)
        index[axis] = slice(None)
        line = tuple(index)
        pick = _smallest(counts[line], status[line] == PUBLISHED)
        if pick is None:
            continue
        value = int(counts[line][pick])
        key = (value == 0, value)
        if best_value is None or key < best_value:
            chosen = list(cell)
            chosen[axis] = pick
            best, best_value = tuple(chosen), key
    return best


def _cycle_closing_cells(status: np.ndarray, cell: tuple[int, ...]) -> np.ndarray:
    """Published cells (r, c') with c' on the column side of the bridge, or (r', c) likewise."""
    row, col = cell
    hidden = status != PUBLISHED
    hidden_without = hidden.copy()
    hidden_without[row, col] = False
    _reach_rows, reach_cols = _reachable(hidden_without, col_start=col)
    from_rows, _from_cols = _reachable(hidden_without, row_start=row)
    candidates = np.zeros_like(hidden)
    candidates[row, reach_cols] = True
    candidates[from_rows, col] = True
    candidates[row, col] = False
    return candidates & ~hidden


def _reachable(
    hidden: np.ndarray, row_start: int | None = None, col_start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros(hidden.shape[0], dtype=bool)
    cols = np.zeros(hidden.shape[1], dtype=bool)
    queue: deque[tuple[str, int]] = deque()
    if row_start is not None:
        rows[row_start] = True
        queue.append(("r", row_start))
    if col_start is not None:
        cols[col_start] = True
        queue.append(("c", col_start))
    while queue:
        kind, i = queue.popleft()
        if kind == "r":
            for c in np.flatnonzero(hidden[i] & ~cols):
                cols[c] = True
                queue.append(("c", int(c)))
        else:
            for r in np.flatnonzero(hidden[:, i] & ~rows):
                rows[r] = True
                queue.append(("r", int(r)))
    return rows, cols
