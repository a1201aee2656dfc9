"""The primary rule: no small count shown, the others rounded where the rule says."""

from __future__ import annotations

import numpy as np

from services.depersonalise.suppression import PUBLISHED, apply_rule


def test_health_rounding_suppresses_one_to_seven_and_rounds_to_five() -> None:
    table = np.array([[0, 3, 8, 12], [7, 13, 22, 40]])
    outcome = apply_rule(table, threshold=8, round_to=5)
    shown = outcome.status == PUBLISHED
    assert outcome.published[shown].tolist() == [0, 10, 10, 15, 20, 40]
    assert outcome.primary == 2


def test_without_suppressed_cells_nothing_is_added() -> None:
    table = np.array([[0, 5, 9], [6, 0, 7]])
    outcome = apply_rule(table, 5)
    assert outcome.primary == 0
    assert outcome.min_published == 5
