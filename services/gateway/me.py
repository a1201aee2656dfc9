"""``GET /v1/me``: the caller's agency and the agreements it is party to, as agreements answers
them for the caller, with the key's roles and id added.

The route (``routes.me``) and the audit trail (which asks which agreements an agency is party to,
``agreements_of``) call agreements the same way.
"""

from __future__ import annotations

from typing import Any

from services.gateway.keys import Caller
from services.gateway.state import GatewayState
from services.gateway.upstream import BackendTimeoutError, BackendUnavailableError, call_json
from shared.errors import ProblemError
from shared.tokens import issue_token

PATH = "/v1/me"


def agreements_unavailable() -> ProblemError:
    return ProblemError(503, "The agreements service is unavailable.", slug="backend-unavailable")


async def agreements_me(gw: GatewayState, caller: Caller, request_id: str) -> tuple[int, Any]:
    """Agreements' ``/v1/me`` for the caller: its status and JSON body."""
    claims = {
        "sub": caller.agency,
        "roles": list(caller.roles),
        "key_id": caller.key_id,
        "request_id": request_id,
        # Bound to this call, as every token the gateway forwards.
        "aud": "agreements",
        "htm": "GET",
        "htu": PATH,
    }
    token = issue_token(gw.token_key, claims, gw.token_ttl)
    try:
        return await call_json(
            gw.upstreams["agreements"], "GET", PATH, token, request_id=request_id
        )
    except (BackendUnavailableError, BackendTimeoutError) as exc:
        raise agreements_unavailable() from exc


def _no_answer() -> ProblemError:
    return ProblemError(503, "The agreements service could not answer.", slug="backend-unavailable")


async def me_answer(gw: GatewayState, caller: Caller, request_id: str) -> dict[str, Any]:
    """The caller's agency, roles, key id and the agreements it is party to."""
    status, body = await agreements_me(gw, caller, request_id)
    if status == 404:
        body = {"agency": {"code": caller.agency}, "agreements": []}
    elif status != 200 or not isinstance(body, dict):
        raise _no_answer()
    return {**body, "roles": list(caller.roles), "key_id": caller.key_id}


async def agreements_of(gw: GatewayState, caller: Caller, request_id: str) -> set[str]:
    """The ids of the agreements the caller's agency is party to."""
    status, body = await agreements_me(gw, caller, request_id)
    if status == 404:
        return set()
    if status != 200 or not isinstance(body, dict):
        raise _no_answer()
    return {str(a.get("id")) for a in body.get("agreements") or [] if isinstance(a, dict)}
