"""A CSV chunk validated column by column: one check per field over all of the chunk's cells,
each a few calls that loop in C (``float`` mapped over the column, one regular expression over
the joined column, the distinct dates parsed once) where the column is regular, else the field's
own converter cell by cell.

A check only sorts rows: the ones it is sure of are built here, and any row it doubts (a cell
that does not convert, a required field missing, a value outside a strict list, a window that
ends before it starts, a row of the wrong width) is flagged and validated again alone by
``shared.validation.validate_row``, so a refused row is refused, and named, exactly as the
row-by-row path does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import repeat
from typing import Any

from shared.catalogue import FieldSpec
from shared.validation import CompiledDataset, Converter

Column = Sequence[str]
Checked = tuple[list[Any], set[int]]
"""The column's stored values (None where the field is left out of the record) and the rows
to validate again one by one."""
ColumnCheck = Callable[[Column], Checked]

# Instants already in the stored form, UTC to the second, one per line: the time's ranges are
# those ``datetime.fromisoformat`` accepts; the dates are parsed once each.
_STORED_INSTANTS = re.compile(
    r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z\n)*"
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z"
)


def cell_by_cell(convert: Converter) -> ColumnCheck:
    """The field's converter on each cell, as ``validate_row`` applies it."""

    def check(values: Column) -> Checked:
        out: list[Any] = []
        flagged: set[int] = set()
        for index, value in enumerate(values):
            if value == "":
                out.append(None)
                continue
            try:
                converted = convert(value)
            except ValueError:
                flagged.add(index)
                out.append(None)
                continue
            out.append(None if converted == "" else converted)
        return out, flagged

    return check


def _text_check(spec: FieldSpec, convert: Converter) -> ColumnCheck:
    low, high = spec.min_length, spec.max_length
    slow = cell_by_cell(convert)

    def check(values: Column) -> Checked:
        out = list(map(str.strip, values))
        lengths = list(map(len, out))
        shortest, longest = min(lengths), max(lengths)
        # an empty or blank cell, or a length out of bounds: the converter says which
        if shortest == 0 or (high is not None and longest > high) or (low and shortest < low):
            return slow(values)
        return out, set()

    return check


def _number_check(convert: Converter) -> ColumnCheck:
    slow = cell_by_cell(convert)

    def check(values: Column) -> Checked:
        try:
            out: list[Any] = list(map(float, values))
        except ValueError:
            return slow(values)
        if not all(map(math.isfinite, out)):
            return slow(values)
        return out, set()

    return check


def _instant_check(convert: Converter) -> ColumnCheck:
    slow = cell_by_cell(convert)

    def check(values: Column) -> Checked:
        if _STORED_INSTANTS.fullmatch("\n".join(values)) is None or min(values) < "1900":
            return slow(values)
        try:
            for day in {value[:10] for value in values}:
                date.fromisoformat(day)
        except ValueError:
            return slow(values)
        return list(values), set()

    return check


def column_check(spec: FieldSpec, convert: Converter) -> ColumnCheck:
    if spec.link:  # identifiers have written forms of their own
        return cell_by_cell(convert)
    if spec.type == "string":
        return _text_check(spec, convert)
    if spec.type == "number":
        return _number_check(convert)
    if spec.type == "datetime":
        return _instant_check(convert)
    return cell_by_cell(convert)


@dataclass
class CheckedChunk:
    """What the column checks made of a chunk: the clean records and their fields outside a
    non-strict list for the rows they are sure of (``None`` for a flagged row)."""

    clean: list[dict[str, Any] | None]
    unlisted: dict[int, list[str]]


class ColumnChecks:
    """One dataset's column checks, built once per push."""

    def __init__(self, compiled: CompiledDataset) -> None:
        self.compiled = compiled
        converters = compiled.by_name
        self.checks = {
            spec.name: column_check(spec, converters[spec.name])
            for spec in compiled.dataset.fields
            if spec.name in converters
        }

    def chunk(self, header: list[str], cells: list[list[str]]) -> CheckedChunk:
        count = len(cells)
        width = len(header)
        if set(map(len, cells)) == {width}:
            flagged: set[int] = set()
        else:
            flagged = {i for i, row in enumerate(cells) if len(row) != width}
        missing = [name for name in self.compiled.required if name not in header]
        if missing or not self.checks.keys() >= set(header):
            return CheckedChunk([None] * count, {})  # every row is refused, by validate_row
        regular = [row for row in cells if len(row) == width] if flagged else cells
        positions = [i for i in range(count) if i not in flagged] if flagged else None
        if not regular:
            return CheckedChunk([None] * count, {})
        columns: dict[str, list[Any]] = {}
        holes: set[int] = set()
        for name, values in zip(header, zip(*regular, strict=True), strict=True):
            out, doubtful = self.checks[name](values)
            columns[name] = out
            flagged.update(doubtful if positions is None else {positions[i] for i in doubtful})
            if None in out:
                empty = [i for i, value in enumerate(out) if value is None]
                holes.update(empty if positions is None else [positions[i] for i in empty])
        required = set(self.compiled.required)
        unlisted: dict[int, list[str]] = {}
        self._allowed(columns, positions, flagged, unlisted)
        starts, ends = columns.get("occurred_at"), columns.get("occurred_to")
        if starts is not None and ends is not None:
            for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
                if start is not None and end is not None and end < start:
                    flagged.add(i if positions is None else positions[i])
        names = list(columns)
        rows = zip(*columns.values(), strict=True)
        if not flagged and not holes:
            return CheckedChunk(list(map(dict, map(zip, repeat(names), rows))), unlisted)
        clean: list[dict[str, Any] | None] = [None] * count
        for index, values in zip(positions or range(count), rows, strict=True):
            if index in flagged:
                continue
            if index in holes:
                record = {k: v for k, v in zip(names, values, strict=True) if v is not None}
                if not required.issubset(record):
                    continue  # flagged: validate_row names the missing field
            else:
                record = dict(zip(names, values, strict=True))
            clean[index] = record
        return CheckedChunk(clean, unlisted)

    def _allowed(
        self,
        columns: dict[str, list[Any]],
        positions: list[int] | None,
        flagged: set[int],
        unlisted: dict[int, list[str]],
    ) -> None:
        """Values in a national list take its spelling; outside a strict one the row is
        flagged, outside another its field is listed as unlisted (in the catalogue's order)."""
        for name, (canonical, strict) in self.compiled.allowed.items():
            values = columns.get(name)
            if values is None:
                continue
            spelling = {
                value: canonical.get(str(value).casefold())
                for value in set(values)
                if value is not None
            }
            if all(match == value for value, match in spelling.items()):
                continue
            for i, value in enumerate(values):
                if value is None:
                    continue
                match = spelling[value]
                index = i if positions is None else positions[i]
                if match is not None:
                    if isinstance(value, str):
                        values[i] = match
                elif strict:
                    flagged.add(index)
                else:
                    unlisted.setdefault(index, []).append(name)
