"""Dependencies of the gateway's own routes: the caller, the app's state, the request's transaction.

The lookups are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, which
cost more than the lookup on every request. The transaction is a plain ``def`` (it opens a
database connection) and is committed before the answer leaves, so a key issued or revoked is in
force once the client reads the answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Connection

from services.gateway.keys import Caller
from services.gateway.settings import Settings
from services.gateway.state import GatewayState
from shared.app import state_of
from shared.deps import get_connection
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


async def gateway(request: Request) -> GatewayState:
    return state_of(request.app, "gateway", GatewayState)


async def settings(request: Request) -> Settings:
    return state_of(request.app, "settings", Settings)


CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin)]
GatewayDep = Annotated[GatewayState, Depends(gateway)]
SettingsDep = Annotated[Settings, Depends(settings)]
# The request's one transaction, committed when the route returns (before the answer leaves).
ConnectionDep = Annotated[Connection, Depends(get_connection, scope="function")]
# The same, held until a streamed answer has been sent in full.
StreamConnectionDep = Annotated[Connection, Depends(get_connection)]
