"""What the ingest app keeps while it runs: one typed object, made in the lifespan (``main.py``),
reached through ``deps.app_state`` / ``StateDep``.

``app.state.settings``, ``app.state.engine`` and ``app.state.token_verifier`` stay beside it: the
shared app, session and claims helpers read them the same way in every service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.ingest.idempotency import InFlight
from services.ingest.linkage_fields import LinkageConfig
from services.ingest.outbox import Relay
from shared.catalogue import Dataset
from shared.validation import CompiledDataset

Entries = list[dict[str, Any]]


@dataclass
class IngestState:
    catalogue: dict[str, Dataset]
    datasets: dict[str, CompiledDataset]  # the catalogue compiled for validation
    relay: Relay
    linkage: LinkageConfig | None
    purge_now: Callable[[], Awaitable[Entries]]  # one retention purge round, now
    agreement_entries: Callable[[str | None], Awaitable[Entries]]  # asks agreements
    # SQLite: pushes wait their turn here, holding no worker thread, so reads stay answered.
    push_turns: asyncio.Semaphore
    in_flight: InFlight = field(default_factory=InFlight)
