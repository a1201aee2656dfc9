"""The registry of layers one replica holds in memory, and the layers' and snap layers' rows.

A layer or snap layer change is saved ``pending``; the rebuild that uses it makes it active
(``generations.activate``). Every change bumps the layers' version (``service_state.bump``), so
each replica reloads its registry when it next answers (``load_registry``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from services.depersonalise.geography import (
    Layer,
    families,
    layer_from_wkb,
    layer_to_wkb,
    parent_map,
)
from services.depersonalise.models import GeographyAreaRow, GeographyLayerRow, SnapLayerRow
from services.depersonalise.service_state import bump, now, read_state, still_held
from services.depersonalise.snapping import SnapLayer, combine_snap_layers
from shared.db import table_of, write_transaction
from shared.errors import ProblemError

T_LAYER = table_of(GeographyLayerRow)
T_AREA = table_of(GeographyAreaRow)
T_SNAP = table_of(SnapLayerRow)


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


def save_layer(
    engine: Engine,
    layer: Layer,
    code_field: str,
    name_field: str | None,
    derived_from: str | None = None,
) -> int:
    """Store a layer as pending, replacing any earlier pending version, in one transaction."""
    with write_transaction(engine) as conn:
        drop_layers(conn, (T_LAYER.c.name == layer.name) & (T_LAYER.c.status == "pending"))
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
        bump(conn)
    return int(layer_id)


def drop_layers(conn: Connection, condition: Any) -> None:
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
        bump(conn)


def activate_pending(conn: Connection) -> None:
    """Make the pending layers and snap layers active, each replacing its active namesake."""
    pending = [
        r[0] for r in conn.execute(select(T_LAYER.c.name).where(T_LAYER.c.status == "pending"))
    ]
    if pending:
        drop_layers(conn, (T_LAYER.c.status == "active") & T_LAYER.c.name.in_(pending))
        conn.execute(update(T_LAYER).where(T_LAYER.c.status == "pending").values(status="active"))
    renamed = [
        r[0] for r in conn.execute(select(T_SNAP.c.name).where(T_SNAP.c.status == "pending"))
    ]
    if renamed:
        # Snap layers coexist (one per area of coverage): a new one replaces only its name.
        conn.execute(
            delete(T_SNAP).where((T_SNAP.c.status == "active") & T_SNAP.c.name.in_(renamed))
        )
        conn.execute(update(T_SNAP).where(T_SNAP.c.status == "pending").values(status="active"))


T = TypeVar("T")
SWITCH_ATTEMPTS = 3


def on_served_generation(
    conn: Connection, registry_of: Callable[[int], Registry], work: Callable[[Registry], T]
) -> tuple[Registry, T]:
    """``work`` on the layers and generation served, done again when a rebuild's switch to its
    generation committed while it read (``still_held``): the old generation's cells go with the
    switch, so a read across it could find none of them. ``registry_of(attempt)`` gives the
    layers of each attempt (each its own copy: another request's reload cannot change the
    generation under it)."""
    for attempt in range(SWITCH_ATTEMPTS):
        registry = registry_of(attempt)
        done = work(registry)
        if still_held(conn, registry.generation):
            return registry, done
    raise ProblemError(
        503,
        "The hub switched to a rebuilt generation while answering; ask again.",
        slug="generation-switched",
    )
