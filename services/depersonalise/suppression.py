"""The primary rule of a dataset on counts: 1..t-1 suppressed, published values rounded.

Applied to the base cells of the release lattice (protection.py), which alone decides what else is
suppressed so that no answer, alone or with others, gives a suppressed count away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PUBLISHED, PRIMARY = 0, 1


@dataclass
class Suppressed:
    status: np.ndarray
    published: np.ndarray

    @property
    def primary(self) -> int:
        return int((self.status == PRIMARY).sum())

    @property
    def min_published(self) -> int | None:
        shown = self.published[(self.status == PUBLISHED) & (self.published > 0)]
        return int(shown.min()) if shown.size else None


def apply_rule(counts: np.ndarray, threshold: int, round_to: int | None = None) -> Suppressed:
    """Suppress counts 1..threshold-1 and round the others to the nearest ``round_to`` (halves
    up: the NHS rule with threshold 8 and round_to 5)."""
    counts = np.asarray(counts, dtype=np.int64)
    status = np.where((counts >= 1) & (counts < threshold), PRIMARY, PUBLISHED).astype(np.int8)
    published = counts.copy()
    if round_to:
        published = (np.floor(counts / round_to + 0.5) * round_to).astype(np.int64)
    return Suppressed(status, published)
