"""The cells of an aggregates answer, area by area, period by period (value by value): read one
by one as dicts (CSV, GeoJSON), or written as JSON straight from the answer's arrays."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, overload

import numpy as np

from services.depersonalise import protection


@contextmanager
def paused_collector() -> Iterator[None]:
    """The cyclic garbage collector paused: a table's hundreds of thousands of tuples and dicts
    hold no cycles, and collections triggered by their allocation would cost several times the
    work (as in geography._bulk_points)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Members a breakdown's field would overwrite in a cell (the dicts are then the only layout).
_CELL_MEMBERS = {"area", "area_name", "period", "count", "suppressed", "rate"}
_dumps = partial(json.dumps, ensure_ascii=False, allow_nan=False)


class CellTable(Sequence[dict[str, Any]]):
    """An answer's cells, area by area, period by period (value by value), each
    ``{"area", "area_name", "period", [by], "count", ["suppressed"], ["rate"]}``.

    A large table is written as JSON straight from the answer's arrays (:meth:`json`) without a
    dict per cell; the dicts are made only when the cells are read one by one (CSV, GeoJSON)."""

    def __init__(
        self,
        areas: list[tuple[str, str]],
        labels: list[str],
        by: str | None,
        values: list[str],
        answer: protection.Answer,
        population: dict[str, float] | None,
    ) -> None:
        self.areas, self.labels, self.by, self.values = areas, labels, by, values
        self.counts: list[int] = answer.count.ravel().tolist()
        self.hidden: list[bool] = answer.suppressed.ravel().tolist()
        self._arrays = (answer.count.ravel(), answer.suppressed.ravel())  # for the JSON writer
        self.population = population
        self._cells: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.counts)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.as_dicts()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.as_dicts())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CellTable | list):
            return self.as_dicts() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def as_dicts(self) -> list[dict[str, Any]]:
        if self._cells is None:
            self._cells = self._layout()
        return self._cells

    def _layout(self) -> list[dict[str, Any]]:
        by, population = self.by, self.population
        counts, hidden = self.counts, self.hidden
        cells: list[dict[str, Any]] = []
        with paused_collector():
            i = 0
            for code, name in self.areas:
                residents = population.get(code) if population else None
                for label in self.labels:
                    for value in self.values:
                        cell: dict[str, Any] = {"area": code, "area_name": name, "period": label}
                        if by:
                            cell[by] = value
                        if hidden[i]:
                            cell["count"] = None
                            cell["suppressed"] = True
                        else:
                            cell["count"] = counts[i]
                        if population is not None:
                            cell["rate"] = _rate(cell["count"], residents)
                        cells.append(cell)
                        i += 1
        return cells

    def json(self) -> str:
        """The cells as ``json.dumps(list(cells), ensure_ascii=False, allow_nan=False,
        separators=(",", ":"))`` writes them (JSONResponse's rendering), character for
        character."""
        return "".join(self.json_pieces())

    def json_pieces(self) -> list[str]:
        """:meth:`json` in pieces, for a body that joins all its pieces once
        (formats.aggregates_json): a national table's 40 MB are then copied once, not at each
        concatenation."""
        if self._cells is not None or (self.by and self.by in _CELL_MEMBERS):
            return [_dumps(self.as_dicts(), separators=(",", ":"))]
        by = self.by
        after = [
            _text(label) + (f",{_text(by)}:{_text(value)}" if by else "")
            for label in self.labels
            for value in self.values
        ]
        heads = [
            f'{{"area":{_text(code)},"area_name":{_text(name)},"period":'
            for code, name in self.areas
        ]
        with paused_collector():
            if self.population is None:
                pieces = self._pieces_by_count(after)
            else:
                pieces = self._pieces_with_rates(after)
            # Every cell is its area's head and its piece, between the list's brackets.
            flat = np.empty(2 * len(pieces) + 2, dtype=object)
            flat[1:-1:2] = np.repeat(
                np.asarray(["," + head for head in heads], dtype=object), len(after)
            )
            flat[2:-1:2] = pieces
            flat[0], flat[-1] = "[", "]"
            if len(pieces):
                flat[1] = flat[1][1:]  # no comma before the first cell
            listed: list[str] = flat.tolist()
            return listed

    def _pieces_by_count(self, after: list[str]) -> np.ndarray:
        """Each cell's text after its area's head: made once for each period (and value) and
        count, and picked by the cells (numpy), not written once per cell."""
        width = len(after)
        counts, hidden = self._arrays
        shown = np.where(hidden, -1, counts.astype(np.int64))
        if shown.size and int(shown.max()) < 4 * shown.size:
            distinct = np.arange(-1, int(shown.max()) + 1)
            which = shown + 1
        else:
            distinct, which = np.unique(shown, return_inverse=True)
        tails = [_HIDDEN_TAIL if n < 0 else f',"count":{n}}}' for n in distinct.tolist()]
        pieces = np.empty((width, len(tails)), dtype=object)
        for j, part in enumerate(after):
            pieces[j, :] = [part + tail for tail in tails]
        column = np.tile(np.arange(width), len(self.areas))
        picked: np.ndarray = pieces[column, which.reshape(-1)]
        return picked

    def _pieces_with_rates(self, after: list[str]) -> np.ndarray:
        population, counts, hidden = self.population or {}, self.counts, self.hidden
        pieces = []
        i = 0
        for code, _name in self.areas:
            residents = population.get(code)
            for part in after:
                count = None if hidden[i] else counts[i]
                shown = _HIDDEN_TAIL[:-1] if count is None else f',"count":{count}'
                pieces.append(f'{part}{shown},"rate":{_dumps(_rate(count, residents))}}}')
                i += 1
        return np.asarray(pieces, dtype=object)


_HIDDEN_TAIL = ',"count":null,"suppressed":true}'


def _text(value: str) -> str:
    """A string as JSON (ensure_ascii off): quoted as it is when nothing in it needs escaping."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return _dumps(value)


def _rate(count: int | None, residents: float | None) -> float | None:
    """Records per 1,000 residents (None without residents or a published count)."""
    return round(count / residents * 1000, 3) if residents and count is not None else None
