"""A pushed chunk turned into the rows ``record`` stores: each row validated (``shared.validation``,
compiled once per dataset), the chunk located together (``location.locate``), and every accepted
row built once as a tuple in ``storage.COLUMNS`` order, the form COPY writes. A refused row is
counted and listed in the push's outcome with its row number, field and reason."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import msgspec

from services.ingest.agreed_fields import check_fields
from services.ingest.bodies import RawRow
from services.ingest.identity import revision_range
from services.ingest.instants import iso
from services.ingest.location import LocationError, PostcodeLookup, locate
from services.ingest.outcome import PushOptions, PushOutcome
from shared.validation import CompiledDataset, validate_row

StoredRow = tuple[Any, ...]
"""One ``record`` row in ``storage.COLUMNS`` order."""
Valid = list[tuple[int, dict[str, Any], list[str]]]

_encode = msgspec.json.Encoder().encode


def chunks(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
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

    def reject(self, row: int, name: str | None, message: str) -> None:
        outcome = self.outcome
        outcome.errors_total += 1
        # A name the dataset lacks came from the sender and could be anything: keep none.
        known = name if name is None or name in self.compiled.names else None
        outcome.reasons[(known, message if known == name else "is not a field of the dataset")] += 1
        if len(outcome.errors) < self.options.max_errors:
            outcome.errors.append({"row": row, "field": name, "message": message})

    def valid(self, chunk: list[RawRow]) -> Valid:
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

    def rows(self, chunk: list[RawRow]) -> list[StoredRow]:
        """The chunk's accepted rows, located, as ``record`` rows."""
        outcome = self.outcome
        valid = self.valid(chunk)
        dataset = self.compiled.dataset
        if self.compiled.located:
            places = locate([v[1] for v in valid], dataset.location, self.lookup)
        else:
            places = []
        provider, name, seq, base = self.options.provider, dataset.name, self.seq, self.base
        received_at, late_before = self.received_at, self.late_before
        stored: list[StoredRow] = []
        unlocated = late = 0
        for index, (number, clean, unlisted) in enumerate(valid):
            east = north = None
            source = "none"
            if places:
                place = places[index]
                if isinstance(place, LocationError):
                    outcome.rejected += 1
                    outcome.outside_gb += place.outside_gb
                    self.reject(number, place.field, place.message)
                    continue
                east, north, source = place.easting, place.northing, place.source
            unlocated += source == "none"
            occurred_at = clean["occurred_at"]
            is_late = occurred_at < late_before
            late += is_late
            stored.append(
                (
                    provider,
                    name,
                    clean["source_ref"],
                    base | number,
                    seq,
                    seq,
                    received_at,
                    occurred_at,
                    east,
                    north,
                    source,
                    is_late,
                    0,
                    ",".join(unlisted) or None,
                    _encode(clean).decode(),
                )
            )
        outcome.unlocated += unlocated
        outcome.late += late
        outcome.accepted += len(stored)
        return stored
