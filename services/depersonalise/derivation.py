"""Ingest's events applied to derived records: per record key the event newer than what a
generation holds, its masked row (``service.mask_records``), the displacement figures, the rows
written (by COPY on PostgreSQL for a batch) and the change to the count cube, in one transaction
per delivery (``apply_events``, retried when a concurrent delivery stored a key first).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from services.depersonalise import cube
from services.depersonalise.cellkey import record_key_value
from services.depersonalise.geography import Layer
from services.depersonalise.masking_figures import displacement_histogram, merge_histograms
from services.depersonalise.models import DerivedRecord, Event, MaskingFigures
from services.depersonalise.service import mask_records
from services.depersonalise.snapping import SnapLayer
from shared.catalogue import Dataset
from shared.db import table_of, write_transaction

T_RECORD = table_of(DerivedRecord)
T_FIGURES = table_of(MaskingFigures)


def apply_events(
    engine: Engine,
    events: list[Event],
    catalogue: dict[str, Dataset],
    targets: list[tuple[int, dict[str, Layer], SnapLayer | None]],
    secret: bytes,
    *,
    count: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """Apply each event to every target generation if its revision is newer than what is held,
    and the change to that generation's count cube in the same transaction (``secret``: the
    record-key secret, cellkey.key_secret). ``count`` false: the cube is left alone (a
    rebuild's replay, whose generation is counted whole by ``recount_cube`` before it is
    served)."""
    statuses: dict[int, str] = {}
    stored = 0
    for attempt in range(3):
        try:
            with write_transaction(engine) as conn:
                for position, (generation, layers, snap) in enumerate(targets):
                    outcome = _apply_to_generation(
                        conn, events, catalogue, generation, layers, snap, secret, count
                    )
                    if position == 0:
                        statuses = outcome
                        stored = sum(1 for s in outcome.values() if s == "stored")
            break
        except IntegrityError:
            # A concurrent delivery stored the same key first: re-read revisions and retry.
            if attempt == 2:
                raise
    return [{"event_id": e.event_id, "status": statuses[e.event_id]} for e in events], stored


def _apply_to_generation(
    conn: Connection,
    events: list[Event],
    catalogue: dict[str, Dataset],
    generation: int,
    layers: dict[str, Layer],
    snap: SnapLayer | None,
    secret: bytes,
    count: bool = True,
) -> dict[int, str]:
    held = _held(conn, generation, events)
    statuses, winners = _winners(events, catalogue, {k: r["revision"] for k, r in held.items()})
    if not winners:
        return statuses
    delta = cube.Delta.empty()
    replaced = [k for k in winners if k in held]
    for key in replaced if count else ():
        spec = catalogue.get(held[key]["dataset"])
        if spec is not None:
            delta.add(held[key], spec, -1)
    for start in range(0, len(replaced), 500):
        conn.execute(
            delete(T_RECORD).where(
                (T_RECORD.c.generation == generation)
                & T_RECORD.c.record_key.in_(replaced[start : start + 500])
            )
        )
    rows = _derive(conn, winners, catalogue, generation, layers, snap)
    for row in rows:
        row["key"] = record_key_value(secret, row["record_key"])
        row["person_key"] = record_key_value(secret, row["person"]) if row["person"] else None
        if count:
            delta.add(row, catalogue[row["dataset"]], +1)
    insert_records(conn, rows)
    cube.apply(conn, delta)
    return statuses


def _held(conn: Connection, generation: int, events: list[Event]) -> dict[str, dict[str, Any]]:
    """The rows held of these events' record keys in a generation. Looked up with the events'
    providers, so that the unique key's index (generation, provider, record_key) finds them:
    without the provider a lookup scanned the whole generation, page after page of a replay."""
    keys = sorted({e.record_key for e in events})
    providers = sorted({e.provider for e in events})
    held: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), 500):
        for row in conn.execute(
            select(T_RECORD).where(
                (T_RECORD.c.generation == generation)
                & T_RECORD.c.provider.in_(providers)
                & T_RECORD.c.record_key.in_(keys[start : start + 500])
            )
        ).mappings():
            held[row["record_key"]] = dict(row)
    return held


def _winners(
    events: list[Event], catalogue: dict[str, Dataset], held: dict[str, int]
) -> tuple[dict[int, str], dict[str, Event]]:
    """Each event's status, and per record key the event that is newer than what is held."""
    statuses: dict[int, str] = {}
    winners: dict[str, Event] = {}
    for event in events:
        if event.dataset not in catalogue:
            statuses[event.event_id] = "skipped"
            continue
        best = winners.get(event.record_key)
        if best is None and held.get(event.record_key) == event.revision:
            # Already held at this very revision (a redelivery, or the replay of a rebuild got
            # there first): the event is applied, and says so.
            statuses[event.event_id] = "stored" if event.op == "upsert" else "deleted"
            continue
        floor = max(held.get(event.record_key, -1), best.revision if best else -1)
        if event.revision <= floor:
            statuses[event.event_id] = "stale"
            continue
        if best is not None:
            statuses[best.event_id] = "stale"
        winners[event.record_key] = event
        statuses[event.event_id] = "stored" if event.op == "upsert" else "deleted"
    return statuses, winners


def _derive(
    conn: Connection,
    winners: dict[str, Event],
    catalogue: dict[str, Dataset],
    generation: int,
    layers: dict[str, Layer],
    snap: SnapLayer | None,
) -> list[dict[str, Any]]:
    """The derived rows of the winning events (tombstones for deletes), and their figures."""
    rows: list[dict[str, Any]] = []
    by_dataset: dict[str, list[Event]] = defaultdict(list)
    for event in winners.values():
        if event.op == "delete":
            rows.append(_row(generation, event, deleted=True))
        else:
            by_dataset[event.dataset].append(event)
    figures: dict[tuple[str, str], list[float]] = defaultdict(list)
    for name, batch in by_dataset.items():
        x = np.array([e.easting if e.easting is not None else np.nan for e in batch], dtype=float)
        y = np.array([e.northing if e.northing is not None else np.nan for e in batch], dtype=float)
        run = mask_records(catalogue[name], [e.record for e in batch], x, y, layers, snap)
        moved = np.hypot(
            np.array([r.x if r.x is not None else np.nan for r in run.records]) - x,
            np.array([r.y if r.y is not None else np.nan for r in run.records]) - y,
        )
        for event, masked, distance in zip(batch, run.records, moved, strict=True):
            rows.append(_masked_row(generation, event, masked))
            if np.isfinite(distance):
                figures[(name, event.provider)].append(float(distance))
    for (dataset, provider), distances in figures.items():
        _add_figures(
            conn, generation, dataset, provider, displacement_histogram(np.array(distances))
        )
    return rows


def _masked_row(generation: int, event: Event, masked: Any) -> dict[str, Any]:
    row = _row(generation, event, deleted=False)
    row.update(
        period_start=masked.period_start,
        occurred_on=masked.occurred_on,
        occurred_until=masked.occurred_until,
        counted=masked.counted or None,
        person=event.person,
        category=masked.category,
        attributes=masked.attributes,
        areas=masked.areas,
        point_areas=masked.point_areas,
        outside_all=bool(masked.areas) and not any(masked.areas.values()),
        x=masked.x,
        y=masked.y,
        method=masked.method,
        k=masked.k,
    )
    return row


COPY_FROM = 200  # rows from which PostgreSQL is given a batch by COPY rather than INSERT
JSON_COLUMNS = {"attributes", "areas", "point_areas", "counted"}
# Columns whose values SQLite takes as they are (text and numbers, never dates or booleans).
PLAIN_COLUMNS = {"record_key", "dataset", "provider", "revision", "category", "person", "method"}
PLAIN_COLUMNS |= {"generation", "x", "y", "k", "key", "person_key"}


def insert_records(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert derived rows: by COPY on PostgreSQL for a batch of ``COPY_FROM`` or more (a
    replay page, a bulk delivery), by a plain executemany otherwise."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        if len(rows) >= COPY_FROM:
            _copy_records(conn, rows)
            return
        for start in range(0, len(rows), 1000):
            conn.execute(insert(T_RECORD), rows[start : start + 1000])
        return
    columns = [c.name for c in T_RECORD.columns if c.name != "id"]
    sql = (
        f"INSERT INTO derived_record ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    for start in range(0, len(rows), 5000):
        chunk = rows[start : start + 5000]
        # Column by column: only the JSON, date and boolean columns are converted.
        values = [_sqlite_column([row.get(c) for row in chunk], c) for c in columns]
        conn.exec_driver_sql(sql, list(zip(*values, strict=True)))


def _sqlite_column(values: list[Any], column: str) -> list[Any]:
    if column in JSON_COLUMNS:
        return [None if v is None else json.dumps(v) for v in values]
    if column in PLAIN_COLUMNS:
        return values
    return [_sqlite(v, column) for v in values]


def _sqlite(value: Any, column: str) -> Any:
    """A value as SQLAlchemy stores it in SQLite (dates as ISO text, JSON as text)."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _copy_records(conn: Connection, rows: list[dict[str, Any]]) -> None:
    columns = [c.name for c in T_RECORD.columns if c.name != "id"]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY derived_record ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row.get(c))
                    if c in JSON_COLUMNS and row.get(c) is not None
                    else row.get(c)
                    for c in columns
                ]
            )


def _row(generation: int, event: Event, deleted: bool) -> dict[str, Any]:
    return {
        "generation": generation,
        "record_key": event.record_key,
        "dataset": event.dataset,
        "provider": event.provider,
        "revision": event.revision,
        "deleted": deleted,
        "period_start": None,
        "occurred_on": None,
        "occurred_until": None,
        "counted": None,
        "person": None,
        "category": None,
        "attributes": {},
        "areas": {},
        "point_areas": {},
        "outside_all": False,
        "x": None,
        "y": None,
        "method": "none",
        "k": None,
        "key": 0,
        "person_key": None,
    }


def _add_figures(
    conn: Connection, generation: int, dataset: str, provider: str, histogram: dict[str, int]
) -> None:
    where = (
        (T_FIGURES.c.generation == generation)
        & (T_FIGURES.c.dataset == dataset)
        & (T_FIGURES.c.provider == provider)
    )
    current = conn.execute(select(T_FIGURES.c.displacement).where(where)).first()
    if current is None:
        conn.execute(
            insert(T_FIGURES).values(
                generation=generation, dataset=dataset, provider=provider, displacement=histogram
            )
        )
    else:
        merged = merge_histograms([current[0] or {}, histogram])
        conn.execute(update(T_FIGURES).where(where).values(displacement=merged))
