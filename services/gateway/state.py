"""What the gateway app keeps while it runs: one typed object, made in the lifespan (``main.py``),
at ``app.state.gateway`` and reached through ``deps.GatewayDep`` (the hot path, ``proxy.py``, is
handed it by the app).

``app.state.settings`` and ``app.state.engine`` stay beside it: the shared app and transaction
helpers read them the same way in every service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.strategies import RateLimiter

from services.gateway.audit import AuditLog
from services.gateway.decisions import DecisionCache
from services.gateway.keys import KeyStore
from services.gateway.oauth import TokenIssuer
from services.gateway.openapi import OpenApiMerger
from services.gateway.upstream import Upstream
from shared.tokens import TokenKey


@dataclass
class GatewayState:
    """Everything the hot path and the gateway's own routes need."""

    token_key: TokenKey
    token_ttl: int
    keys: KeyStore
    audit: AuditLog
    decisions: DecisionCache
    upstreams: dict[str, Upstream]  # one pooled client per backend
    limiter: RateLimiter
    limits: list[RateLimitItem]
    max_body_bytes: int
    service_token: Callable[[], str]  # the gateway's own token for peer calls
    tokens: TokenIssuer | None = None
    # Public keys a verifier of the audit chain may trust (None: those the table holds).
    audit_trusted: dict[str, str] | None = None
    openapi: OpenApiMerger | None = None
