"""The push pipeline: validate rows in chunks, locate them, bulk-upsert them with their outbox row
and the batch's answer in one transaction. Plain functions over an engine; no FastAPI here."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, case, func, insert, select, update

from services.ingest.bodies import RawRow
from services.ingest.linkage import LinkageConfig, link_batch
from services.ingest.location import LocationError, locate
from services.ingest.service_sql import (
    BATCH,
    IDEMPOTENCY,
    OUTBOX,
    POSTCODE,
    RECORD,
    REJECTION,
    iso,
    revision_range,
    utc_now,
)
from services.ingest.storage import record_writer
from shared.db import write_transaction
from shared.errors import ProblemError
from shared.validation import CompiledDataset, validate_row

_encode = msgspec.json.Encoder().encode


@dataclass
class PushOptions:
    provider: str
    atomic: bool = False
    allowed_fields: list[str] | None = None
    chunk_rows: int = 2000
    max_rows: int = 5_000_000
    max_errors: int = 1000
    idempotency: tuple[str, str, int] | None = None
    """(key, request fingerprint, hours to keep) when the sender gave an Idempotency-Key."""
    linkage: LinkageConfig | None = None


@dataclass
class PushOutcome:
    batch_id: str
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    corrections: int = 0
    unlocated: int = 0
    outside_gb: int = 0
    late: int = 0
    reasons: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    """(field, message) -> rows refused for it; every row, however many errors are listed."""

    def counts(self) -> dict[str, int]:
        names = ("received", "accepted", "rejected", "corrections", "unlocated", "outside_gb")
        return {name: getattr(self, name) for name in (*names, "late")}

    def answer(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "batch_id": self.batch_id,
            "received": self.received,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
        }
        if self.errors_total > len(self.errors):
            body["errors_total"] = self.errors_total
        return body


def check_fields(names: Iterable[str], allowed: list[str] | None, dataset: str) -> None:
    """Fields the agreement does not allow refuse the whole push (422 naming them)."""
    if allowed is None:
        return
    outside = sorted(set(names) - set(allowed))
    if outside:
        raise ProblemError(
            422,
            f"The agreement does not allow these fields of {dataset}: {', '.join(outside)}.",
            slug="fields-not-agreed",
            rule="fields-not-agreed",
            fields=outside,
        )


def check_header(compiled: CompiledDataset, header: list[str], allowed: list[str] | None) -> None:
    """A CSV column that is not a field of the dataset refuses the push (422 naming it)."""
    unknown = sorted(set(header) - compiled.names)
    if unknown:
        raise ProblemError(
            422,
            f"Columns that are not fields of {compiled.dataset.name}: {', '.join(unknown[:20])}.",
            slug="unknown-fields",
            fields=unknown[:20],
        )
    check_fields(header, allowed, compiled.dataset.name)


class _AtomicRollbackError(Exception):
    """Rolls back an atomic push that had errors."""


def _chunks(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    chunk: list[RawRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def postcode_lookup(connection: Connection) -> Any:
    def lookup(postcodes: set[str]) -> dict[str, tuple[float, float]]:
        found: dict[str, tuple[float, float]] = {}
        wanted = sorted(postcodes)
        for start in range(0, len(wanted), 500):
            rows = connection.execute(
                select(POSTCODE.c.postcode, POSTCODE.c.easting, POSTCODE.c.northing).where(
                    POSTCODE.c.postcode.in_(wanted[start : start + 500])
                )
            )
            found.update({pc: (east, north) for pc, east, north in rows})
        return found

    return lookup


def push(
    engine: Engine,
    compiled: CompiledDataset,
    rows: Iterator[RawRow],
    options: PushOptions,
    now: datetime | None = None,
) -> PushOutcome:
    """Validate and store a batch; the records, the outbox row, the batch and the stored answer
    commit together or not at all."""
    moment = now or utc_now()
    outcome = PushOutcome(batch_id=uuid.uuid4().hex)
    try:
        with write_transaction(engine) as connection:
            _push_in(connection, compiled, rows, options, moment, outcome)
            if options.atomic and outcome.errors_total:
                raise _AtomicRollbackError
    except _AtomicRollbackError:
        valid = outcome.received - outcome.rejected
        if valid:
            outcome.reasons[(None, "refused with the rest of its atomic batch")] += valid
        outcome.rejected, outcome.accepted = outcome.received, 0
        outcome.corrections = outcome.unlocated = outcome.late = 0
        with write_transaction(engine) as connection:
            seq = _insert_batch(connection, compiled, options, moment, outcome, "rejected")
            _record_rejections(connection, seq, compiled, options, moment, outcome)
            _remember(connection, options, moment, outcome)
    return outcome


def _insert_batch(
    connection: Connection,
    compiled: CompiledDataset,
    options: PushOptions,
    moment: datetime,
    outcome: PushOutcome,
    status: str,
) -> int:
    result = connection.execute(
        insert(BATCH).values(
            batch_id=outcome.batch_id,
            dataset=compiled.dataset.name,
            provider=options.provider,
            kind="push",
            status=status,
            **outcome.counts(),
            created_at=iso(moment),
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def _record_rejections(
    connection: Connection,
    seq: int,
    compiled: CompiledDataset,
    options: PushOptions,
    moment: datetime,
    outcome: PushOutcome,
) -> None:
    """The batch's refusal reasons, counted, for the partnership report."""
    if not outcome.reasons:
        return
    connection.execute(
        insert(REJECTION),
        [
            {
                "batch_seq": seq,
                "provider": options.provider,
                "dataset": compiled.dataset.name,
                "received_at": iso(moment),
                "field": name,
                "reason": message[:200],
                "rows": rows,
            }
            for (name, message), rows in sorted(outcome.reasons.items(), key=str)
        ],
    )


def _remember(
    connection: Connection, options: PushOptions, moment: datetime, outcome: PushOutcome
) -> None:
    if options.idempotency is None:
        return
    key, fingerprint, hours = options.idempotency
    connection.execute(
        insert(IDEMPOTENCY).values(
            agency=options.provider,
            key=key,
            fingerprint=fingerprint,
            status_code=202,
            response=_encode(outcome.answer()).decode(),
            expires_at=iso(moment + timedelta(hours=hours)),
        )
    )


def _push_in(
    connection: Connection,
    compiled: CompiledDataset,
    rows: Iterator[RawRow],
    options: PushOptions,
    moment: datetime,
    outcome: PushOutcome,
) -> None:
    dataset = compiled.dataset
    seq = _insert_batch(connection, compiled, options, moment, outcome, "accepted")
    base, _ = revision_range(seq)
    received_at = iso(moment)
    late_before = iso(moment - timedelta(days=dataset.period_days))
    writer = record_writer(connection)
    lookup = postcode_lookup(connection)
    checked_fields: set[str] = set()
    errors = outcome.errors

    def reject(row: int, name: str | None, message: str) -> None:
        outcome.errors_total += 1
        # A name the dataset lacks came from the sender and could be anything: keep none.
        known = name if name is None or name in compiled.names else None
        outcome.reasons[(known, message if known == name else "is not a field of the dataset")] += 1
        if len(errors) < options.max_errors:
            errors.append({"row": row, "field": name, "message": message})

    for chunk in _chunks(rows, options.chunk_rows):
        outcome.received += len(chunk)
        if outcome.received > options.max_rows:
            raise ProblemError(
                413,
                f"A batch holds at most {options.max_rows} rows; split the file.",
                slug="too-many-rows",
            )
        valid: list[tuple[int, dict[str, Any], list[str]]] = []
        for number, raw in chunk:
            if isinstance(raw, str):
                outcome.rejected += 1
                reject(number, None, raw)
                continue
            if options.allowed_fields is not None and not checked_fields.issuperset(raw):
                check_fields(raw, options.allowed_fields, dataset.name)
                checked_fields.update(raw)
            clean, unlisted, problems = validate_row(compiled, raw)
            if problems:
                outcome.rejected += 1
                for name, message in problems:
                    reject(number, name, message)
                continue
            valid.append((number, clean, unlisted))
        if compiled.located:
            places = locate([v[1] for v in valid], dataset.location, lookup)
        else:
            places = []
        batch_rows: list[dict[str, Any]] = []
        for index, (number, clean, unlisted) in enumerate(valid):
            place = places[index] if places else None
            if isinstance(place, LocationError):
                outcome.rejected += 1
                outcome.outside_gb += place.outside_gb
                reject(number, place.field, place.message)
                continue
            source = place.source if place is not None else "none"
            outcome.unlocated += source == "none"
            late = clean["occurred_at"] < late_before
            outcome.late += late
            batch_rows.append(
                {
                    "provider": options.provider,
                    "dataset": dataset.name,
                    "source_ref": clean["source_ref"],
                    "revision": base | number,
                    "batch_seq": seq,
                    "first_batch": seq,
                    "received_at": received_at,
                    "occurred_at": clean["occurred_at"],
                    "easting": place.easting if place is not None else None,
                    "northing": place.northing if place is not None else None,
                    "location_source": source,
                    "late": late,
                    "corrections": 0,
                    "unlisted": ",".join(unlisted) or None,
                    "data": _encode(clean).decode(),
                }
            )
        outcome.accepted += len(batch_rows)
        if batch_rows and not (options.atomic and outcome.errors_total):
            writer.write(batch_rows)
    if options.atomic and outcome.errors_total:
        return
    _record_rejections(connection, seq, compiled, options, moment, outcome)
    writer.finish()
    outcome.corrections = _corrections(connection, seq, outcome.accepted)
    connection.execute(
        update(BATCH)
        .where(BATCH.c.seq == seq)
        .values(status="accepted" if outcome.accepted else "rejected", **outcome.counts())
    )
    if outcome.accepted and options.linkage is not None and dataset.link_fields:
        # people are linked before the outbox row exists, so every event carries its person
        link_batch(connection, dataset, seq, options.linkage, moment)
    if outcome.accepted:
        start, end = revision_range(seq)
        connection.execute(
            insert(OUTBOX).values(
                kind="batch",
                batch_seq=seq,
                provider=options.provider,
                dataset=dataset.name,
                cursor=start,
                end=end,
                created_at=received_at,
            )
        )
    _remember(connection, options, moment, outcome)


def _corrections(connection: Connection, seq: int, accepted: int) -> int:
    """Rows that replaced an earlier record, or an earlier row of the same batch."""
    start, end = revision_range(seq)
    kept, replaced = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((RECORD.c.first_batch != seq, 1), else_=0)), 0),
        ).where(RECORD.c.revision > start, RECORD.c.revision < end)
    ).one()
    return int(replaced) + (accepted - int(kept))
