"""Short-lived internal tokens: the gateway vouches for a request; backends verify it.

A token is ``base64url(claims JSON) "." base64url(HMAC-SHA256)``. Every service shares the secret
(``CSP_INTERNAL_SECRET``); tokens expire after a few seconds (10 by default), and a token the
gateway forwards is bound to its call (``aud``, ``htm``, ``htu``; once only if it changes state),
so a captured one is good for nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from shared.errors import ProblemError

HEADER = "CSP-Internal-Token"
# A backend's answer to the gateway: how many records a data answer held (for the audit entry).
RECORD_COUNT = "CSP-Record-Count"
CLOCK_SKEW_SECONDS = 5


class TokenError(Exception):
    """The token is missing, malformed, forged or expired."""


class InternalClaims(BaseModel):
    """What the gateway (or a peer service) asserts about a request it forwards."""

    sub: str = Field(description="agency code, or service name for service-to-service calls")
    roles: list[str] = []
    request_id: str | None = None
    key_id: str | None = None
    action: str | None = None
    dataset: str | None = None
    level: str | None = None
    purpose: str | None = None
    rule: str | None = None
    agreement: str | None = None
    version: int | None = None
    fields: list[str] | None = None
    providers: list[str] | None = None
    retention_days: int | None = None
    window: list[str] | None = None
    # For data routes, one per provider and agreement (see shared/grants.py): {"provider",
    # "agreement", "version", "level", "fields", "from", "to", "purpose"}.
    grants: list[dict[str, Any]] | None = None
    aud: str | None = Field(default=None, description="the service the token is for")
    htm: str | None = Field(default=None, description="the HTTP method it is for")
    htu: str | None = Field(default=None, description="the (encoded) path it is for")
    # For a cohort query (aggregates with cohort=): the decision's grants on offender-cohort.
    cohort_grants: list[dict[str, Any]] | None = None
    # For the case view (/v1/people...): dataset -> the grants of its personal-level decision.
    dataset_grants: dict[str, list[dict[str, Any]]] | None = None
    iat: int = 0
    exp: int = 0
    jti: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return "service" in self.roles


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode("ascii"), hashlib.sha256).digest())


def issue_token(secret: str, claims: dict[str, Any], ttl_seconds: int = 60) -> str:
    now = int(time.time())
    body = {k: v for k, v in claims.items() if v is not None}
    body.update(iat=now, exp=now + ttl_seconds, jti=secrets.token_hex(8))
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: str, token: str, now: float | None = None) -> InternalClaims:
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise TokenError("malformed token")
    if not hmac.compare_digest(signature, _sign(secret, payload)):
        raise TokenError("bad signature")
    try:
        claims = InternalClaims.model_validate_json(_unb64(payload))
    except ValueError as exc:
        raise TokenError("malformed claims") from exc
    current = time.time() if now is None else now
    if claims.exp + CLOCK_SKEW_SECONDS < current:
        raise TokenError("expired")
    return claims


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_REMEMBERED = 200_000


def check_binding(
    claims: InternalClaims, service: str | None, method: str, raw_path: str, seen: dict[str, int]
) -> None:
    """A token bound to a call (the gateway binds every one it forwards) is good for that call
    only: its service, method and path, and once if it changes state (``seen`` remembers the
    ``jti`` of such calls until they expire)."""
    if claims.aud is not None and service is not None and claims.aud != service:
        raise TokenError("issued for another service")
    if claims.htm is None:
        return
    if claims.htm != method or claims.htu != raw_path:
        raise TokenError("issued for another call")
    if method in MUTATING:
        now = int(time.time())
        if len(seen) > MAX_REMEMBERED:
            for jti in [j for j, exp in seen.items() if exp + CLOCK_SKEW_SECONDS < now]:
                del seen[jti]
        if claims.jti in seen:
            raise TokenError("already used")
        seen[claims.jti] = claims.exp


def internal_claims(request: Request) -> InternalClaims:
    """FastAPI dependency: the verified claims of the forwarded request, or 401."""
    token = request.headers.get(HEADER)
    if not token:
        raise ProblemError(
            401, "This service is reached only through the gateway.", slug="internal-token-missing"
        )
    state = request.app.state
    try:
        claims = verify_token(state.settings.internal_secret.get_secret_value(), token)
        raw = request.scope.get("raw_path")
        raw_path = raw.decode("latin-1").partition("?")[0] if raw else request.url.path
        if not hasattr(state, "seen_tokens"):
            state.seen_tokens = {}
        check_binding(
            claims, getattr(state, "service_name", None), request.method, raw_path,
            state.seen_tokens,
        )  # fmt: skip
        return claims
    except TokenError as exc:
        raise ProblemError(
            401, f"The internal token is not valid ({exc}).", slug="internal-token-invalid"
        ) from exc


ClaimsDep = Annotated[InternalClaims, Depends(internal_claims)]


def require_admin(claims: ClaimsDep) -> InternalClaims:
    if not claims.is_admin:
        raise ProblemError(403, "Operators only.", slug="forbidden", rule="admin-only")
    return claims


AdminDep = Annotated[InternalClaims, Depends(require_admin)]
