"""What the agreements app keeps while it runs: one typed object, made in the lifespan
(``main.py``) as ``app.state.agreements`` (as ingest keeps ``app.state.ingest`` and the gateway
``app.state.gateway``), reached through ``deps.RuntimeDep``.

``app.state.settings``, ``app.state.engine`` and ``app.state.token_verifier`` stay beside it: the
shared app, session and claims helpers read them the same way in every service.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from services.agreements.decision_log import DecisionRecorder
from services.agreements.reference import CodeLists
from services.agreements.snapshot import SnapshotCache
from shared.catalogue import Dataset


@dataclass
class Runtime:
    """What the lifespan creates and the routes use."""

    engine: Engine
    snapshots: SnapshotCache
    recorder: DecisionRecorder
    codes: CodeLists
    catalogue: dict[str, Dataset]
