"""A pushed chunk turned into the rows ``record`` stores: a CSV chunk validated column by column
(``columns``), other rows one by one (``shared.validation``, compiled once per dataset), the chunk
located together (``location.locate_columns``), and the accepted rows built by column as a
``storage.StoredChunk``, from which COPY's text is made. A refused row is counted and listed in
the push's outcome with its row number, field and reason."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import repeat
from operator import itemgetter
from typing import Any, cast

import msgspec

from services.ingest.agreed_fields import check_fields
from services.ingest.bodies import CsvChunk, CsvRows, RawRow
from services.ingest.columns import ColumnChecks
from services.ingest.identity import revision_range
from services.ingest.instants import iso
from services.ingest.location import LocationError, PostcodeLookup, locate_columns
from services.ingest.outcome import PushOptions, PushOutcome
from services.ingest.storage import Same, StoredChunk
from shared.validation import CompiledDataset, validate_row

Valid = list[tuple[int, dict[str, Any], list[str]]]
Chunk = list[RawRow] | CsvChunk

_encode_lines = msgspec.json.Encoder().encode_lines


def chunks(rows: Iterable[RawRow] | CsvRows, size: int) -> Iterator[Chunk]:
    """Rows in chunks of ``size``; a CSV's as its cells, to be validated column by column."""
    if isinstance(rows, CsvRows):
        yield from rows.chunks(size)
        return
    chunk: list[RawRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class RecordRows:
    """Builds one push's ``record`` rows chunk by chunk, refusing rows into ``outcome``."""

    def __init__(
        self,
        compiled: CompiledDataset,
        options: PushOptions,
        outcome: PushOutcome,
        seq: int,
        moment: datetime,
        lookup: PostcodeLookup,
    ) -> None:
        self.compiled = compiled
        self.options = options
        self.outcome = outcome
        self.seq = seq
        self.base = revision_range(seq)[0]
        self.received_at = iso(moment)
        self.late_before = iso(moment - timedelta(days=compiled.dataset.period_days))
        self.lookup = lookup
        self.checked_fields: set[str] = set()
        self.columns = ColumnChecks(compiled)

    def reject(self, row: int, name: str | None, message: str) -> None:
        outcome = self.outcome
        outcome.errors_total += 1
        # A name the dataset lacks came from the sender and could be anything: keep none.
        known = name if name is None or name in self.compiled.names else None
        outcome.reasons[(known, message if known == name else "is not a field of the dataset")] += 1
        if len(outcome.errors) < self.options.max_errors:
            outcome.errors.append({"row": row, "field": name, "message": message})

    def valid(self, chunk: Iterable[RawRow]) -> Valid:
        """(row number, clean record, fields outside a non-strict list) of the rows that pass."""
        compiled, allowed = self.compiled, self.options.allowed_fields
        valid: Valid = []
        for number, raw in chunk:
            if isinstance(raw, str):
                self.outcome.rejected += 1
                self.reject(number, None, raw)
                continue
            if allowed is not None and not self.checked_fields.issuperset(raw):
                check_fields(raw, allowed, compiled.dataset.name)
                self.checked_fields.update(raw)
            clean, unlisted, problems = validate_row(compiled, raw)
            if problems:
                self.outcome.rejected += 1
                for name, message in problems:
                    self.reject(number, name, message)
                continue
            valid.append((number, clean, unlisted))
        return valid

    def valid_csv(self, chunk: CsvChunk) -> Valid:
        """``valid`` for a CSV chunk: its columns checked together, and only the rows they
        doubt validated one by one (in order, so errors are listed as ``valid`` lists them)."""
        allowed = self.options.allowed_fields
        if allowed is not None and not self.checked_fields.issuperset(chunk.header):
            check_fields(chunk.header, allowed, self.compiled.dataset.name)
            self.checked_fields.update(chunk.header)
        checked = self.columns.chunk(chunk.header, chunk.cells)
        unlisted = checked.unlisted
        doubtful = CsvChunk(chunk.header, chunk.first, [])
        if None not in checked.clean and not unlisted:
            numbers = range(chunk.first, chunk.first + len(chunk))
            every = cast("list[dict[str, Any]]", checked.clean)  # no None, checked just above
            return list(zip(numbers, every, repeat([])))
        valid: Valid = []
        for index, clean in enumerate(checked.clean):
            if clean is None:
                doubtful.first = chunk.first + index
                doubtful.cells = [chunk.cells[index]]
                valid.extend(self.valid(doubtful.raw_rows()))
            else:
                valid.append((chunk.first + index, clean, unlisted.get(index, [])))
        return valid

    def rows(self, chunk: Chunk) -> StoredChunk:
        """The chunk's accepted rows, located, as ``record`` rows (built column by column)."""
        outcome = self.outcome
        valid = self.valid_csv(chunk) if isinstance(chunk, CsvChunk) else self.valid(chunk)
        if not valid:
            return StoredChunk(0, [])
        dataset = self.compiled.dataset
        numbers, records, unlisted = (list(column) for column in zip(*valid, strict=True))
        # one call encodes the chunk; JSON escapes every newline inside a value
        texts = _encode_lines(records).decode().split("\n")[: len(records)]
        occurred = list(map(itemgetter("occurred_at"), records))
        east: Sequence[float | None] | Same = Same(None)
        north: Sequence[float | None] | Same = Same(None)
        sources: Sequence[str] | Same = Same("none")
        errors: dict[int, LocationError] = {}
        if self.compiled.located:
            places = locate_columns(records, dataset.location, self.lookup)
            east, north, sources = places.eastings, places.northings, places.sources
            errors = places.errors
        seq = self.seq
        columns: list[Sequence[Any] | Same] = [
            Same(self.options.provider),
            Same(dataset.name),
            list(map(itemgetter("source_ref"), records)),
            list(map(self.base.__or__, numbers)),
            Same(seq),
            Same(seq),
            Same(self.received_at),
            occurred,
            east,
            north,
            sources,
            list(map(self.late_before.__gt__, occurred)),
            Same(0),
            [",".join(names) or None for names in unlisted] if any(unlisted) else Same(None),
            texts,
        ]
        count = len(records)
        if errors:
            for index in sorted(errors):
                place = errors[index]
                outcome.rejected += 1
                outcome.outside_gb += place.outside_gb
                self.reject(numbers[index], place.field, place.message)
            kept = [i for i in range(count) if i not in errors]
            columns = [c if isinstance(c, Same) else [c[i] for i in kept] for c in columns]
            count = len(kept)
        sources, late = columns[10], columns[11]
        outcome.unlocated += count if isinstance(sources, Same) else list(sources).count("none")
        outcome.late += sum(late) if not isinstance(late, Same) else 0
        outcome.accepted += count
        return StoredChunk(count, columns)
