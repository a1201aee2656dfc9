"""Dependencies the routes share: the session, settings, the runtime state and who may call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from services.agreements.settings import Settings
from services.agreements.state import Runtime
from shared.app import state_of
from shared.deps import get_session, internal_claims
from shared.http import require_service
from shared.tokens import InternalClaims

# The dependencies below are async only to run on the event loop: FastAPI would send a plain
# function to a worker thread, which costs more than they do on the decision path.


async def get_settings(request: Request) -> Settings:
    return state_of(request.app, "settings", Settings)


async def get_runtime(request: Request) -> Runtime:
    return state_of(request.app, "agreements", Runtime)


def session_then_refresh(request: Request) -> Iterator[Session]:
    """The shared request session; once it has committed, this replica re-reads its snapshot."""
    yield from get_session(request)
    state_of(request.app, "agreements", Runtime).snapshots.invalidate()


async def caller_claims(request: Request) -> InternalClaims:
    """``shared.tokens.internal_claims`` on the event loop, for the routes on the hot path."""
    return await internal_claims(request)


async def service_caller(request: Request) -> InternalClaims:
    return require_service(await internal_claims(request))


# Commit before the response leaves, so a caller's next request sees the change.
SessionDep = Annotated[Session, Depends(session_then_refresh, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[InternalClaims, Depends(caller_claims)]
ServiceDep = Annotated[InternalClaims, Depends(service_caller)]
