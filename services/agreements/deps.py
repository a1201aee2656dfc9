"""Dependencies the routes share: the session, settings, the runtime state and who may call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.agreements.decision_log import DecisionRecorder
from services.agreements.reference import CodeLists
from services.agreements.settings import Settings
from services.agreements.snapshot import SnapshotCache
from shared.catalogue import Dataset
from shared.db import get_session
from shared.errors import ProblemError
from shared.tokens import InternalClaims, internal_claims


@dataclass
class Runtime:
    """What the lifespan creates and the routes use."""

    engine: Engine
    snapshots: SnapshotCache
    recorder: DecisionRecorder
    codes: CodeLists
    catalogue: dict[str, Dataset]


# The dependencies below are async only to run on the event loop: FastAPI would send a plain
# function to a worker thread, which costs more than they do on the decision path.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def session_then_refresh(request: Request) -> Iterator[Session]:
    """The shared request session; once it has committed, this replica re-reads its snapshot."""
    yield from get_session(request)
    request.app.state.runtime.snapshots.invalidate()


async def caller_claims(request: Request) -> InternalClaims:
    """``shared.tokens.internal_claims`` on the event loop, for the routes on the hot path."""
    return await internal_claims(request)


async def require_service(request: Request) -> InternalClaims:
    claims = await internal_claims(request)
    if not claims.is_service:
        raise ProblemError(
            403,
            "Only the gateway and peer services call this.",
            slug="forbidden",
            rule="service-only",
        )
    return claims


# Commit before the response leaves, so a caller's next request sees the change.
SessionDep = Annotated[Session, Depends(session_then_refresh, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[InternalClaims, Depends(caller_claims)]
ServiceDep = Annotated[InternalClaims, Depends(require_service)]
