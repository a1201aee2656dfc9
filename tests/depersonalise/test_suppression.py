"""Suppression holds for all tables: no small count shown, no hidden count recoverable."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from services.depersonalise.suppression import PUBLISHED, apply_rule
from tests.depersonalise.attack import solvable_cells

shapes_2d = st.tuples(st.integers(1, 7), st.integers(1, 7))
shapes_3d = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
counts = st.integers(0, 30) | st.sampled_from([0, 0, 1, 2, 3, 4])


def check(table: np.ndarray, threshold: int) -> None:
    outcome = apply_rule(table, threshold)
    shown = outcome.status == PUBLISHED
    assert not (shown & (table >= 1) & (table < threshold)).any()
    hidden = ~shown
    assert solvable_cells(hidden) == [], "a suppressed cell can be solved from the totals"
    assert np.array_equal(outcome.published[shown], table[shown])


@settings(max_examples=150, deadline=None)
@given(arrays(np.int64, shapes_2d, elements=counts), st.integers(2, 10))
def test_two_dimensional_tables(table: np.ndarray, threshold: int) -> None:
    check(table, threshold)


@settings(max_examples=80, deadline=None)
@given(arrays(np.int64, shapes_3d, elements=counts), st.integers(2, 10))
def test_tables_with_categories(table: np.ndarray, threshold: int) -> None:
    check(table, threshold)


def test_a_bridge_between_two_protected_blocks_is_protected() -> None:
    # Each row and column has two hidden cells, yet the cell joining the blocks is a bridge.
    table = np.full((4, 4), 20)
    for cell in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)]:
        table[cell] = 2
    table[1, 2] = 3
    outcome = apply_rule(table, 5)
    assert solvable_cells(outcome.status != PUBLISHED) == []


def test_health_rounding_suppresses_one_to_seven_and_rounds_to_five() -> None:
    table = np.array([[0, 3, 8, 12], [7, 13, 22, 40]])
    outcome = apply_rule(table, threshold=8, round_to=5, secondary=False)
    shown = outcome.status == PUBLISHED
    assert outcome.published[shown].tolist() == [0, 10, 10, 15, 20, 40]
    assert outcome.primary == 2


def test_without_suppressed_cells_nothing_is_added() -> None:
    table = np.array([[0, 5, 9], [6, 0, 7]])
    outcome = apply_rule(table, 5)
    assert outcome.primary == outcome.secondary == 0
    assert outcome.min_published == 5
