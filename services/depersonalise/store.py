"""Persistence: layers and snap layers (reloaded into memory on start), derived records, releases.

Answers are served from one *generation* of derived records. A layer or snap layer change is saved
``pending`` and a rebuild writes the next generation beside the current one; when it completes, one
transaction makes the pending layers active, switches the generation and drops the old records.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, false, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from services.depersonalise import cube, partitions
from services.depersonalise.aggregates import ALL, Fact
from services.depersonalise.cellkey import record_key_value
from services.depersonalise.geography import (
    Layer,
    families,
    layer_from_wkb,
    layer_to_wkb,
    parent_map,
)
from services.depersonalise.models import (
    DerivedRecord,
    Event,
    GeographyAreaRow,
    GeographyLayerRow,
    MaskingFigures,
    PopulationRow,
    ReleaseRow,
    ServiceState,
    SnapLayerRow,
)
from services.depersonalise.service import displacement_histogram, mask_records, merge_histograms
from services.depersonalise.snapping import SnapLayer, combine_snap_layers
from shared.catalogue import Dataset
from shared.db import write_transaction
from shared.grants import Slices

T_LAYER = GeographyLayerRow.__table__  # type: ignore[attr-defined]
T_AREA = GeographyAreaRow.__table__  # type: ignore[attr-defined]
T_SNAP = SnapLayerRow.__table__  # type: ignore[attr-defined]
T_RECORD = DerivedRecord.__table__  # type: ignore[attr-defined]
T_FIGURES = MaskingFigures.__table__  # type: ignore[attr-defined]
T_STATE = ServiceState.__table__  # type: ignore[attr-defined]
T_POP = PopulationRow.__table__  # type: ignore[attr-defined]
T_RELEASE = ReleaseRow.__table__  # type: ignore[attr-defined]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Registry:
    """What one replica holds in memory: active and pending layers and snap layers."""

    version: int = -1
    generation: int = 1
    building: int | None = None
    active: dict[str, Layer] = field(default_factory=dict)
    pending: dict[str, Layer] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    snap: SnapLayer | None = None
    snap_pending: SnapLayer | None = None
    snap_meta: list[dict[str, Any]] = field(default_factory=list)
    rebuild: dict[str, Any] = field(default_factory=dict)
    # (child, parent) → the parent map of active layers where child nests in parent, and each
    # layer's family base (geography.parent_map, families); found when a layer is loaded.
    parents: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    family: dict[str, str] = field(default_factory=dict)
    _checked: dict[tuple[int, int], dict[str, str] | None] = field(default_factory=dict)

    def building_layers(self) -> dict[str, Layer]:
        return {**self.active, **self.pending}

    def building_snap(self) -> SnapLayer | None:
        return self.snap_pending or self.snap

    def targets(self) -> list[tuple[int, dict[str, Layer], SnapLayer | None]]:
        """Generations an incoming event is written to: the served one, and the one being built."""
        result = [(self.generation, self.active, self.snap)]
        if self.building is not None:
            result.append((self.building, self.building_layers(), self.building_snap()))
        return result


def ensure_state(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        if conn.execute(select(T_STATE.c.id)).first() is None:
            conn.execute(insert(T_STATE).values(id=1, generation=1, layers_version=0, rebuild={}))
            partitions.create(conn, 1)


def read_state(conn: Connection) -> dict[str, Any]:
    row = conn.execute(select(T_STATE).where(T_STATE.c.id == 1)).mappings().one()
    return dict(row)


def load_registry(engine: Engine, registry: Registry | None = None) -> Registry:
    """(Re)load layers into memory if another replica or a rebuild changed them."""
    with engine.connect() as conn:
        state = read_state(conn)
        if registry is not None and registry.version == state["layers_version"]:
            registry.rebuild = state["rebuild"] or {}
            registry.generation, registry.building = state["generation"], state["building"]
            return registry
        fresh = Registry(
            version=state["layers_version"],
            generation=state["generation"],
            building=state["building"],
            rebuild=state["rebuild"] or {},
        )
        for row in conn.execute(select(T_LAYER).order_by(T_LAYER.c.id)).mappings():
            target = fresh.active if row["status"] == "active" else fresh.pending
            cached = _held_layer(registry, row["name"], row["id"])
            if cached is not None:
                target[row["name"]] = cached
            else:
                areas = conn.execute(
                    select(T_AREA.c.code, T_AREA.c.name, T_AREA.c.geometry)
                    .where(T_AREA.c.layer_id == row["id"])
                    .order_by(T_AREA.c.id)
                ).all()
                target[row["name"]] = layer_from_wkb(row["name"], areas, row["source_crs"])
            if row["status"] == "active":
                fresh.meta[row["name"]] = dict(row)
            else:
                fresh.meta.setdefault(row["name"], {}).update(pending=dict(row))
        active: dict[str, SnapLayer] = {}
        pending: dict[str, SnapLayer] = {}
        for row in conn.execute(select(T_SNAP).order_by(T_SNAP.c.id)).mappings():
            points = np.frombuffer(row["points"], dtype=np.float64).reshape(-1, 3)
            snap = SnapLayer(row["name"], points[:, 0], points[:, 1], points[:, 2], row["report"])
            (active if row["status"] == "active" else pending)[row["name"]] = snap
            fresh.snap_meta.append(
                {
                    "name": row["name"],
                    "status": row["status"],
                    "loaded_at": row["loaded_at"],
                    "report": row["report"],
                }
            )
        _find_nesting(fresh, registry)
        fresh.snap = combine_snap_layers(list(active.values()))
        if pending:
            fresh.snap_pending = combine_snap_layers(list({**active, **pending}.values()))
        return fresh


def _held_layer(registry: Registry | None, name: str, layer_id: int) -> Layer | None:
    """The layer already in memory under this row id (active, or pending before it was made
    active), so it is not parsed again and its nesting is not found again."""
    if registry is None:
        return None
    meta = registry.meta.get(name, {})
    if meta.get("id") == layer_id and name in registry.active:
        return registry.active[name]
    if (meta.get("pending") or {}).get("id") == layer_id and name in registry.pending:
        return registry.pending[name]
    return None


def _find_nesting(fresh: Registry, old: Registry | None) -> None:
    """Which layers (active and pending) nest in which, checking only pairs not checked before
    (a layer object is kept while its layer is unchanged); answers use the active layers'."""
    layers = fresh.building_layers()
    known = old._checked if old is not None else {}
    for name, child in layers.items():
        for other, parent in layers.items():
            key = (id(child), id(parent))
            if key not in known:
                known[key] = (
                    {str(c): str(c) for c in child.codes}
                    if child is parent
                    else parent_map(child, parent)
                )
            fresh._checked[key] = known[key]
            if name in fresh.active and other in fresh.active and known[key] is not None:
                fresh.parents[(name, other)] = known[key]  # type: ignore[assignment]
    fresh.family = families(fresh.active, fresh.parents)


def _bump(conn: Connection, **values: Any) -> None:
    conn.execute(
        update(T_STATE)
        .where(T_STATE.c.id == 1)
        .values(layers_version=T_STATE.c.layers_version + 1, **values)
    )


def save_layer(
    engine: Engine,
    layer: Layer,
    code_field: str,
    name_field: str | None,
    derived_from: str | None = None,
) -> int:
    """Store a layer as pending, replacing any earlier pending version, in one transaction."""
    with write_transaction(engine) as conn:
        _drop_layers(conn, (T_LAYER.c.name == layer.name) & (T_LAYER.c.status == "pending"))
        layer_id = conn.execute(
            insert(T_LAYER).values(
                name=layer.name,
                status="pending",
                source_crs=layer.source_crs,
                code_field=code_field,
                name_field=name_field,
                area_count=len(layer),
                repaired=layer.repaired,
                derived_from=derived_from,
                loaded_at=now(),
            )
        ).inserted_primary_key
        assert layer_id is not None
        layer_id = layer_id[0]
        rows = layer_to_wkb(layer)
        for start in range(0, len(rows), 2000):
            conn.execute(
                insert(T_AREA),
                [
                    {"layer_id": layer_id, "code": c, "name": n[:255], "geometry": g}
                    for c, n, g in rows[start : start + 2000]
                ],
            )
        _bump(conn)
    return int(layer_id)


def _drop_layers(conn: Connection, condition: Any) -> None:
    ids = [r[0] for r in conn.execute(select(T_LAYER.c.id).where(condition))]
    if ids:
        conn.execute(delete(T_AREA).where(T_AREA.c.layer_id.in_(ids)))
        conn.execute(delete(T_LAYER).where(T_LAYER.c.id.in_(ids)))


def save_snap_layer(engine: Engine, snap: SnapLayer) -> None:
    points = np.column_stack([snap.x, snap.y, snap.catchment]).astype(np.float64)
    with write_transaction(engine) as conn:
        conn.execute(
            delete(T_SNAP).where((T_SNAP.c.status == "pending") & (T_SNAP.c.name == snap.name))
        )
        conn.execute(
            insert(T_SNAP).values(
                name=snap.name,
                status="pending",
                points=points.tobytes(),
                report=snap.report,
                loaded_at=now(),
            )
        )
        _bump(conn)


def start_building(engine: Engine) -> int:
    """Open the next generation for a rebuild (dropping any half-built one)."""
    with write_transaction(engine) as conn:
        state = read_state(conn)
        # Strictly above any earlier building generation, so a cancelled rebuild's late writes
        # land in a generation that activation drops.
        building = state["generation"] + state["layers_version"] + 1
        _drop_generations(conn, state["generation"])
        partitions.create(conn, building)
        _bump(
            conn,
            building=building,
            rebuild={"state": "running", "processed": 0, "started_at": now().isoformat()},
        )
    return building


def set_progress(engine: Engine, rebuild: dict[str, Any]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(update(T_STATE).where(T_STATE.c.id == 1).values(rebuild=rebuild))


def live_records(engine: Engine, generation: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(T_RECORD)
                .where((T_RECORD.c.generation == generation) & (T_RECORD.c.deleted.is_(False)))
            ).scalar_one()
        )


def activate(engine: Engine, building: int, rebuild: dict[str, Any]) -> None:
    """Serve the rebuilt generation with the pending layers, in one transaction."""
    with write_transaction(engine) as conn:
        pending = [
            r[0] for r in conn.execute(select(T_LAYER.c.name).where(T_LAYER.c.status == "pending"))
        ]
        if pending:
            _drop_layers(conn, (T_LAYER.c.status == "active") & T_LAYER.c.name.in_(pending))
            conn.execute(
                update(T_LAYER).where(T_LAYER.c.status == "pending").values(status="active")
            )
        renamed = [
            r[0] for r in conn.execute(select(T_SNAP.c.name).where(T_SNAP.c.status == "pending"))
        ]
        if renamed:
            # Snap layers coexist (one per area of coverage): a new one replaces only its name.
            conn.execute(
                delete(T_SNAP).where((T_SNAP.c.status == "active") & T_SNAP.c.name.in_(renamed))
            )
            conn.execute(update(T_SNAP).where(T_SNAP.c.status == "pending").values(status="active"))
        _drop_generations(conn, building)
        _bump(conn, generation=building, building=None, rebuild=rebuild)


def recount_cube(engine: Engine, generation: int, catalogue: dict[str, Dataset]) -> None:
    """Count a rebuilt generation's cube from its records (cube.recount), in one transaction.
    Writers of that generation's records wait meanwhile (on PostgreSQL a SHARE lock on its
    partition; SQLite has one writer), so a live event is either counted here or, committed
    after, adds its own change to the recounted cube."""
    with write_transaction(engine) as conn:
        if partitions.postgres(conn):
            held = conn.execute(
                text("SELECT to_regclass(:name)"), {"name": f"derived_record_g{int(generation)}"}
            ).scalar_one()
            conn.execute(text(f"LOCK TABLE {held or 'derived_record'} IN SHARE MODE"))
        cube.recount(conn, generation, catalogue)


def analyze_generation(engine: Engine, generation: int) -> None:
    """Fresh planner statistics for a generation's partitions (PostgreSQL; nothing elsewhere).
    A rebuild's partitions start empty: without them, a lookup of held record keys is planned
    as a scan of the whole partition, page after page."""
    with engine.begin() as conn:
        if not partitions.postgres(conn):
            return
        for table in partitions.PARTITIONED:
            name = f"{table}_g{int(generation)}"
            if conn.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar_one():
                conn.execute(text(f"ANALYZE {name}"))


def abandon(engine: Engine, rebuild: dict[str, Any]) -> None:
    """Keep serving the old generation; the pending layers wait for a retried rebuild."""
    with write_transaction(engine) as conn:
        state = read_state(conn)
        _drop_generations(conn, state["generation"])
        _bump(conn, building=None, rebuild=rebuild)


def _drop_generations(conn: Connection, keep: int) -> None:
    """Every derived record, figure and cube cell of a generation other than ``keep``."""
    partitions.drop_others(conn, keep)
    conn.execute(delete(T_RECORD).where(T_RECORD.c.generation != keep))
    conn.execute(delete(T_FIGURES).where(T_FIGURES.c.generation != keep))
    cube.drop_generations(conn, keep)


# --- events ---------------------------------------------------------------------------------


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


# --- reads ----------------------------------------------------------------------------------


def _granted(scope: Slices) -> Any:
    """Records of each provider dated within one of its grants' windows."""
    day = func.coalesce(T_RECORD.c.occurred_on, T_RECORD.c.period_start)
    clauses = []
    for provider, first, last in scope.windows():
        clause = T_RECORD.c.provider == provider
        if first is not None:
            clause = clause & (day >= first)
        if last is not None:
            clause = clause & (day <= last)
        clauses.append(clause)
    return or_(*clauses) if clauses else false()


def _live(generation: int, dataset: str, scope: Slices) -> Any:
    return (
        (T_RECORD.c.generation == generation)
        & (T_RECORD.c.dataset == dataset)
        & _granted(scope)
        & (T_RECORD.c.deleted.is_(False))
    )


def aggregate_rows(
    engine: Engine,
    generation: int,
    dataset: str,
    scope: Slices,
    layer: str | None,
    by: str | None = "category",
    people: set[str] | None = None,
    category: str | None = None,
) -> list[Fact]:
    """A fact of every record in scope of the given ``people`` (or of ``category``): its area in
    ``layer`` (``all`` without one), period start, day, end of window, the ``by`` field's value,
    provider, person pseudonym and keys. Cohort queries only, bounded by the cohort's people or
    strand: tables of whole datasets are read from the cube."""
    if people is None and category is None:
        raise ValueError("a per-record read is bounded by people or a category")
    where = _live(generation, dataset, scope)
    if category is not None:
        where = where & (T_RECORD.c.category == category)
    facts: list[Fact] = []
    with engine.connect() as conn:
        if people is None:
            return _facts(conn.execute(select(*FACT_COLUMNS).where(where)), layer, by)
        chosen = sorted(people)
        for start in range(0, len(chosen), 500):
            bounded = where & T_RECORD.c.person.in_(chosen[start : start + 500])
            facts += _facts(conn.execute(select(*FACT_COLUMNS).where(bounded)), layer, by)
    return facts


FACT_COLUMNS = (
    T_RECORD.c.areas,
    T_RECORD.c.period_start,
    T_RECORD.c.category,
    T_RECORD.c.provider,
    func.coalesce(T_RECORD.c.occurred_on, T_RECORD.c.period_start),
    T_RECORD.c.occurred_until,
    T_RECORD.c.person,
    T_RECORD.c.attributes,
    T_RECORD.c.counted,
    T_RECORD.c.key,
    T_RECORD.c.person_key,
)


def _facts(result: Any, layer: str | None, by: str | None) -> list[Fact]:
    facts = []
    for areas, start, category, provider, day, until, person, attrs, counted, key, pkey in result:
        if by in (None, "category"):
            value = category
        else:
            value = (attrs or {}).get(by, (counted or {}).get(by))
        facts.append(
            Fact(
                (areas or {}).get(layer) if layer is not None else ALL,
                start,
                None if value is None else str(value),
                provider,
                _as_date(day),
                _as_date(until),
                person,
                key or 0,
                pkey or 0,
            )
        )
    return facts


def base_people(
    engine: Engine, query: cube.Query, spec: Dataset, scope: Slices
) -> list[cube.PersonRow]:
    with engine.connect() as conn:
        return list(cube.read_people(conn, query, spec, scope))


def providers_holding(engine: Engine, generation: int, dataset: str) -> set[str]:
    """Every provider with live records of ``dataset``."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(T_RECORD.c.provider)
                .where(
                    (T_RECORD.c.generation == generation)
                    & (T_RECORD.c.dataset == dataset)
                    & (T_RECORD.c.deleted.is_(False))
                )
                .distinct()
            ).scalars()
        )


def _as_date(value: Any) -> date | None:
    # SQLite answers coalesce() over dates as text.
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def record_page(
    engine: Engine,
    generation: int,
    dataset: str,
    scope: Slices,
    after: int,
    limit: int,
) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(page_select(generation, dataset, scope, after, limit))
        return [dict(r) for r in result.mappings()]


def page_select(generation: int, dataset: str, scope: Slices, after: int, limit: int) -> Any:
    """One keyset page of live records in id order (index ix_derived_page)."""
    return (
        select(T_RECORD)
        .where(_live(generation, dataset, scope) & (T_RECORD.c.id > after))
        .order_by(T_RECORD.c.id)
        .limit(limit)
    )


def record_figures(
    engine: Engine, generation: int, dataset: str, scope: Slices
) -> tuple[float | None, float | None, dict[str, int], int, int]:
    """Smallest and median k of the published points, the displacement histogram, records and
    records without a point: counted by the database, no record loaded."""
    providers = scope.providers
    with engine.connect() as conn:
        live = _live(generation, dataset, scope)
        total, without, with_k, k_min = conn.execute(
            select(
                func.count(),
                func.count().filter(T_RECORD.c.x.is_(None)),
                func.count(T_RECORD.c.k),
                func.min(T_RECORD.c.k),
            ).where(live)
        ).one()
        middle = (
            [
                float(k)
                for k in conn.execute(
                    select(T_RECORD.c.k)
                    .where(live & T_RECORD.c.k.is_not(None))
                    .order_by(T_RECORD.c.k)
                    .offset((with_k - 1) // 2)
                    .limit(1 if with_k % 2 else 2)
                ).scalars()
            ]
            if with_k
            else []
        )
        histograms = [
            r[0] or {}
            for r in conn.execute(
                select(T_FIGURES.c.displacement).where(
                    (T_FIGURES.c.generation == generation)
                    & (T_FIGURES.c.dataset == dataset)
                    & T_FIGURES.c.provider.in_(providers)
                )
            )
        ]
    median = sum(middle) / len(middle) if middle else None
    return k_min, median, merge_histograms(histograms), int(total), int(without)


def records_without_area(engine: Engine, generation: int) -> int:
    """Live records that fall in none of the loaded layers."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(T_RECORD)
                .where(
                    (T_RECORD.c.generation == generation)
                    & (T_RECORD.c.deleted.is_(False))
                    & T_RECORD.c.outside_all.is_(True)
                )
            ).scalar_one()
        )


def save_population(engine: Engine, layer: str, values: dict[str, float]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(delete(T_POP).where(T_POP.c.layer == layer))
        items = [{"layer": layer, "code": c, "population": p} for c, p in values.items()]
        for start in range(0, len(items), 2000):
            conn.execute(insert(T_POP), items[start : start + 2000])


def population(engine: Engine, layer: str) -> dict[str, float] | None:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_POP.c.code, T_POP.c.population).where(T_POP.c.layer == layer)
        ).all()
    return {code: value for code, value in rows} if rows else None


def release(engine: Engine, release_id: str) -> dict[str, Any] | None:
    """One recorded release: what was asked, by whom, under which agreement, and its figures."""
    with engine.connect() as conn:
        row = conn.execute(select(T_RELEASE).where(T_RELEASE.c.id == release_id)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    found["created_at"] = found["created_at"].isoformat()
    return found


def record_release(
    engine: Engine,
    kind: str,
    dataset: str,
    agency: str,
    agreement: str | None,
    query: dict[str, Any],
    disclosure: dict[str, Any],
) -> str:
    release_id = secrets.token_hex(12)
    with write_transaction(engine) as conn:
        conn.execute(
            insert(T_RELEASE).values(
                id=release_id,
                kind=kind,
                dataset=dataset,
                agency=agency,
                agreement=agreement,
                query=query,
                disclosure=disclosure,
                created_at=now(),
            )
        )
    return release_id


# --- reconciliation -------------------------------------------------------------------------


def held_revisions(engine: Engine, generation: int, dataset: str) -> dict[str, list[int]]:
    """Per provider, the revisions of the live derived records of a dataset."""
    found: dict[str, list[int]] = defaultdict(list)
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_RECORD.c.provider, T_RECORD.c.revision).where(
                (T_RECORD.c.generation == generation)
                & (T_RECORD.c.dataset == dataset)
                & (T_RECORD.c.deleted.is_(False))
            )
        )
        for provider, revision in rows:
            found[provider].append(revision)
    return dict(found)


def drop_unheld(
    engine: Engine,
    generation: int,
    spec: Dataset,
    provider: str,
    keep: set[int],
    horizon: int,
) -> int:
    """Remove live derived records of a dataset x provider whose revision ingest no longer holds
    (a retraction or purge whose delete never arrived), and their cube counts; how many went.
    Revisions from ``horizon`` up (given out after ingest was read) stay."""
    with write_transaction(engine) as conn:
        rows = conn.execute(
            select(T_RECORD.c.id, T_RECORD.c.revision).where(
                (T_RECORD.c.generation == generation)
                & (T_RECORD.c.dataset == spec.name)
                & (T_RECORD.c.provider == provider)
                & (T_RECORD.c.deleted.is_(False))
            )
        ).all()
        gone = [row_id for row_id, revision in rows if revision < horizon and revision not in keep]
        delta = cube.Delta.empty()
        for start in range(0, len(gone), 500):
            chosen = T_RECORD.c.id.in_(gone[start : start + 500])
            for row in conn.execute(select(T_RECORD).where(chosen)).mappings():
                delta.add(dict(row), spec, -1)
            conn.execute(delete(T_RECORD).where(chosen))
        cube.apply(conn, delta)
    return len(gone)
