"""What the depersonalise app keeps while it runs: one typed object, made in the lifespan
(``main.py``) at ``app.state.depersonalise`` (as ingest keeps ``app.state.ingest``), reached
through ``deps.app_state`` / ``StateDep``.

``app.state.settings``, ``app.state.engine`` (the writer, also ``engine`` here) and
``app.state.token_verifier`` stay beside it: the shared app, readiness and claims helpers read
them the same way in every service.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from services.depersonalise.layer_registry import Registry
from shared.tokens import TokenKey

Report = dict[str, Any]


@dataclass
class DepersonaliseState:
    engine: Engine  # the writer: events, loads, rebuilds, releases
    read_engine: Engine  # answers (cube reads, record pages): the read replica, or the writer
    token_key: TokenKey  # signs this service's calls to ingest
    ingest: httpx.AsyncClient  # the peer the replays and holdings come from, pooled
    # This replica's layers, reloaded when another replica or a rebuild changed them.
    registry: Registry
    reconcile_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rebuild_task: asyncio.Task[Report] | None = None  # this replica's running rebuild
    reconcile: Report | None = None  # this replica's last reconciliation
    # A layer's simplified polygons for GeoJSON answers, for the registry's version alone.
    wire_cache: dict[tuple[str, int], dict[str, dict[str, Any]]] = field(default_factory=dict)
