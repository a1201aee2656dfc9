"""Dependencies of the gateway's own routes.

Plain lookups, so ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread,
which cost more than the lookup on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.gateway.keys import Caller
from services.gateway.proxy import Gateway
from services.gateway.settings import Settings
from shared.app import state_of
from shared.errors import ProblemError


async def caller(request: Request) -> Caller:
    """The caller the gateway middleware authenticated (it refuses unauthenticated requests)."""
    found = request.scope.get("state", {}).get("caller")
    if not isinstance(found, Caller):
        raise ProblemError(401, "A valid API key is required.", slug="unauthenticated")
    return found


async def admin(found: Annotated[Caller, Depends(caller)]) -> Caller:
    if not found.is_admin:
        raise ProblemError(403, "Operators only.", slug="forbidden", rule="admin-only")
    return found


async def gateway(request: Request) -> Gateway:
    return state_of(request.app, "gateway", Gateway)


async def settings(request: Request) -> Settings:
    return state_of(request.app, "settings", Settings)


CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin)]
GatewayDep = Annotated[Gateway, Depends(gateway)]
SettingsDep = Annotated[Settings, Depends(settings)]
