"""An answer's cells written as JSON straight from its arrays are what ``json.dumps`` of one dict
per cell writes (JSONResponse's rendering), character for character."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from services.depersonalise.cell_table import CellTable
from services.depersonalise.formats import aggregates_json
from services.depersonalise.protection import Answer

AREAS = [
    ("E01000001", "City of London 001A"),
    ("W01000002", "Ynys Môn 002B"),
    ('Q"1', 'a "quoted" name\\ with a backslash'),
    ("T\t2", "control\x01 and line\u2028separator, no\u00a0break"),
]
LABELS = ["2024-Q1", "2024-Q2", "2024-Q3"]


def _answer(values: int, seed: int) -> Answer:
    rng = np.random.default_rng(seed)
    shape = (len(AREAS), len(LABELS), values)
    count = rng.integers(0, 40, shape) * rng.integers(0, 2, shape) * 100
    hidden = rng.random(shape) < 0.3
    return Answer(np.where(hidden, 0, count), hidden, count % 256, None, None)


def _as_before(cells: CellTable) -> str:
    return json.dumps(
        [dict(c) for c in cells], ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


@pytest.mark.parametrize(
    ("by", "values"),
    [(None, [""]), ("category", ["Burglary", 'Say "no"', "Ünïcode", ""]), ("period", ["x"])],
)
@pytest.mark.parametrize(
    "population",
    [None, {"E01000001": 1523.0, "W01000002": 3.0, 'Q"1': 0.0}],
    ids=["counts", "rates"],
)
def test_cells_as_json_are_the_dicts_as_json(
    by: str | None, values: list[str], population: dict[str, float] | None
) -> None:
    for seed in range(3):
        answer = _answer(len(values), seed)
        cells = CellTable(AREAS, LABELS, by, values, answer, population)
        written = CellTable(AREAS, LABELS, by, values, answer, population).json()
        assert written == _as_before(cells)
        assert json.loads(written) == list(cells)
        assert len(cells) == answer.count.size
        assert any(c["count"] is None and c["suppressed"] is True for c in cells)


def test_a_body_is_written_as_json_response_writes_it() -> None:
    from starlette.responses import JSONResponse

    answer = _answer(1, 7)
    cells = CellTable(AREAS, LABELS, None, [""], answer, None)
    body: dict[str, Any] = {
        "dataset": "police-crime",
        "geography": "lsoa21",
        "rule": {"threshold": 5, "round_to": None, "secondary": True, "perturbation": None},
        "cells": cells,
        "disclosure": {"cells": 12, "records": None, "protection": "release-lattice"},
        "agreement": "Ägreement",
    }
    expected = JSONResponse({**body, "cells": [dict(c) for c in cells]}).body
    assert aggregates_json(body) == expected


def test_an_empty_table_is_an_empty_list() -> None:
    empty = Answer(np.zeros((0, 3, 1), int), np.zeros((0, 3, 1), bool), np.zeros(0), 0, 0)
    cells = CellTable([], LABELS, None, [""], empty, None)
    assert cells.json() == "[]" and list(cells) == [] and cells == []
