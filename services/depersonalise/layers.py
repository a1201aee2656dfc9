"""Which names and k a loaded layer may have, what a listing of layers shows (to operators and to
agencies), and the active layer an answer is counted on. No FastAPI."""

from __future__ import annotations

import re
from typing import Any

from services.depersonalise.geography import wire_features
from services.depersonalise.layer_registry import Registry
from services.depersonalise.replay import layer_progress, retry_after
from shared.catalogue import Dataset
from shared.errors import ProblemError

LAYER_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def check_name(name: str) -> None:
    if not re.match(LAYER_NAME, name):
        raise ProblemError(
            422,
            "A layer name is 1-64 lower-case letters, digits, '-' or '_'.",
            slug="invalid-layer-name",
            field="layer",
        )


def check_k(k: int, catalogue: dict[str, Dataset]) -> None:
    """A snap layer must keep the k of the datasets that snap: a smaller one would serve none."""
    needed = [d.generalisation.k for d in catalogue.values() if d.generalisation.method == "snap"]
    if needed and k < min(needed):
        raise ProblemError(
            422,
            f"k = {k} is below the k = {min(needed)} the snapping datasets need.",
            slug="k-below-dataset",
            field="k",
        )


def layer_summary(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "areas": meta.get("area_count"),
        "source_crs": meta.get("source_crs"),
        "code_field": meta.get("code_field"),
        "name_field": meta.get("name_field"),
        "repaired": meta.get("repaired"),
        "derived_from": meta.get("derived_from"),
        "loaded_at": meta.get("loaded_at"),
    }


def geography_listing(registry: Registry, is_admin: bool) -> dict[str, Any]:
    """Every layer, active or pending, the snap layers and the rebuild; hub-wide record counts (a
    rebuild's progress) only for operators: an agency learns only whether a rebuild runs."""
    layers = []
    for name in sorted(set(registry.active) | set(registry.pending)):
        meta = registry.meta.get(name, {})
        pending = meta.get("pending")
        entry: dict[str, Any] = {
            "name": name,
            "status": "active" if name in registry.active else "pending",
        }
        if name in registry.active:
            entry.update(layer_summary(meta))
        if pending:
            entry["pending"] = layer_summary(pending)
            entry["progress"] = layer_progress(registry.rebuild)
        layers.append(entry)
    listing: dict[str, Any] = {
        "layers": layers,
        "snap_layers": registry.snap_meta,
        "rebuild": registry.rebuild,
        "generation": registry.generation,
    }
    if not is_admin:
        listing["rebuild"] = {"state": registry.rebuild.get("state")} if registry.rebuild else {}
    return listing


def layer_or_error(registry: Registry, geography: str) -> Any:
    """The active layer ``geography``: 409 with Retry-After while it is built, 404 if unknown."""
    layer = registry.active.get(geography)
    if layer is None:
        pending = geography in registry.pending
        raise ProblemError(
            409 if pending else 404,
            f"Layer {geography!r} is still being built." if pending else f"No layer {geography!r}.",
            slug="layer-rebuilding" if pending else "unknown-layer",
            field="geography",
            headers={"Retry-After": retry_after(registry.rebuild)} if pending else None,
        )
    return layer


def wire_shapes(
    cache: dict[tuple[str, int], dict[str, dict[str, Any]]],
    geography: str,
    layer: Any,
    tolerance: float,
    version: int,
) -> dict[str, dict[str, Any]]:
    """A layer's simplified polygons, kept in ``cache`` for the registry's ``version`` alone."""
    key = (geography, version)
    if key not in cache:
        cache.clear()
        cache[key] = wire_features(layer, tolerance)
    return cache[key]
