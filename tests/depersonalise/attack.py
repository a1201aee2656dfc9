"""An attacker who knows every published cell and every line total tries to solve for the rest."""

from __future__ import annotations

import numpy as np
from scipy.linalg import null_space


def line_constraints(hidden: np.ndarray) -> np.ndarray:
    """One row per line (along every axis) of the table, over the hidden cells only."""
    positions = list(zip(*np.nonzero(hidden), strict=True))
    rows = []
    for axis, size in enumerate(hidden.shape):
        if size < 2:
            continue
        lines: dict[tuple[int, ...], list[int]] = {}
        for j, cell in enumerate(positions):
            lines.setdefault(cell[:axis] + cell[axis + 1 :], []).append(j)
        for members in lines.values():
            row = np.zeros(len(positions))
            row[members] = 1.0
            rows.append(row)
    return np.array(rows).reshape(len(rows), len(positions))


def solvable_cells(hidden: np.ndarray) -> list[tuple[int, ...]]:
    """Hidden cells whose value the line totals fix uniquely (zero in every null-space vector).

    The published cells are subtracted from each known total, so only the hidden cells remain
    unknown: the system is ``A h = b`` and a cell is solvable exactly when the null space of
    ``A`` does not move it.
    """
    positions = [tuple(int(v) for v in c) for c in zip(*np.nonzero(hidden), strict=True)]
    if not positions:
        return []
    matrix = line_constraints(hidden)
    if matrix.size == 0:
        return []
    basis = null_space(matrix)
    free = np.abs(basis).max(axis=1) > 1e-8 if basis.size else np.zeros(len(positions), bool)
    return [cell for cell, moves in zip(positions, free, strict=True) if not moves]
