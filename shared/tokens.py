"""Short-lived internal tokens: a calling service vouches for a request; backends verify it.

A token is ``base64url(claims JSON) "." base64url(Ed25519 signature)``. Each calling service
signs with its own private key (``CSP_<SERVICE>_TOKEN_KEY``) and names itself in ``iss``; each
backend holds only public keys (``CSP_INTERNAL_PUBLIC_KEYS``) and accepts only the callers
``CALLERS`` lists for it, so no backend can mint a token another service would accept. Only the
gateway speaks for agencies: a peer service's token speaks for that service alone. Tokens expire
after a few seconds (10 by default), and a token bound to its call (``aud``, ``htm``, ``htu``) is
good for that call only, once if it changes state (shared/replay.py remembers it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, SecretStr, ValidationError

from shared.replay import ReplayMemory

if TYPE_CHECKING:
    from shared.deps import AdminDep as AdminDep
    from shared.deps import ClaimsDep as ClaimsDep
    from shared.deps import internal_claims as internal_claims
    from shared.deps import require_admin as require_admin

HEADER = "CSP-Internal-Token"
# A backend's answer to the gateway: how many records a data answer held (for the audit entry).
RECORD_COUNT = "CSP-Record-Count"
CLOCK_SKEW_SECONDS = 5
GATEWAY = "gateway"
# Who calls whom: each backend accepts internal tokens from these callers and no others.
CALLERS: dict[str, tuple[str, ...]] = {
    "agreements": ("gateway", "ingest"),
    "ingest": ("gateway", "depersonalise"),
    "depersonalise": ("gateway", "ingest"),
}
SIGNERS = ("gateway", "ingest", "depersonalise")


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
    iss: str = Field(default="", description="the service that signed the token")
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


def public_text(key: Ed25519PublicKey) -> str:
    """A public key as configured: the base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def private_key(seed_b64: str) -> Ed25519PrivateKey:
    """A private key from the base64 of its 32-byte seed (``generate_secrets.py`` makes them)."""
    try:
        seed = base64.b64decode(seed_b64.strip(), validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a token key is the base64 of a 32-byte Ed25519 seed") from exc


@dataclass(frozen=True)
class TokenKey:
    """A calling service's own signing key."""

    issuer: str
    private: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def configured(cls, issuer: str, value: SecretStr | None, file: str | None) -> TokenKey:
        """The key from its setting or the file it names; no default, so a service never signs
        with a key anyone could know."""
        text = value.get_secret_value().strip() if value is not None else ""
        if not text and file:
            text = Path(file).read_text(encoding="ascii").strip()
        if not text:
            raise RuntimeError(
                f"{issuer} has no token key: set CSP_{issuer.upper()}_TOKEN_KEY (or _FILE)"
            )
        return cls(issuer, private_key(text))

    @property
    def public(self) -> str:
        return public_text(self.private.public_key())


_PAIR = re.compile(r"([a-z][a-z0-9-]*):([A-Za-z0-9+/]+={0,2})")


def parse_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """``CSP_INTERNAL_PUBLIC_KEYS``: ``name:base64`` pairs separated by commas or spaces."""
    keys: dict[str, Ed25519PublicKey] = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        match = _PAIR.fullmatch(item)
        if match is None:
            raise ValueError(f"CSP_INTERNAL_PUBLIC_KEYS: {item[:20]!r} is not name:base64-key")
        try:
            raw = base64.b64decode(match[2], validate=True)
            keys[match[1]] = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(
                f"CSP_INTERNAL_PUBLIC_KEYS: the key of {match[1]} is not valid"
            ) from exc
    return keys


def format_public_keys(keys: Mapping[str, str]) -> str:
    return ",".join(f"{name}:{key}" for name, key in keys.items())


def accepted_callers(service: str, configured: str) -> dict[str, Ed25519PublicKey]:
    """The public keys ``service`` verifies tokens with: its expected callers', all required."""
    keys = parse_public_keys(configured)
    expected = CALLERS.get(service, ())
    missing = [name for name in expected if name not in keys]
    if missing:
        raise RuntimeError(
            f"{service} accepts internal tokens from {', '.join(expected)}: "
            f"CSP_INTERNAL_PUBLIC_KEYS lacks {', '.join(missing)}"
        )
    return {name: keys[name] for name in expected}


def issue_token(key: TokenKey, claims: dict[str, Any], ttl_seconds: int = 60) -> str:
    now = int(time.time())
    body = {k: v for k, v in claims.items() if v is not None}
    body.update(iss=key.issuer, iat=now, exp=now + ttl_seconds, jti=secrets.token_hex(8))
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(key.private.sign(payload.encode('ascii')))}"


def service_token(
    key: TokenKey, audience: str, method: str | None = None, path: str | None = None, ttl: int = 10
) -> str:
    """A peer service's token for its own call to ``audience`` (bound to the call when given)."""
    claims = {"sub": key.issuer, "roles": ["service"], "aud": audience, "htm": method, "htu": path}
    return issue_token(key, claims, ttl)


def verify_token(
    callers: Mapping[str, Ed25519PublicKey], token: str, now: float | None = None
) -> InternalClaims:
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise TokenError("malformed token")
    try:
        body = json.loads(_unb64(payload))
        raw_signature = _unb64(signature)
    except (ValueError, binascii.Error) as exc:
        raise TokenError("malformed token") from exc
    issuer = body.get("iss") if isinstance(body, dict) else None
    public = callers.get(issuer) if isinstance(issuer, str) else None
    if public is None:
        raise TokenError("from a caller this service does not accept")
    try:
        public.verify(raw_signature, payload.encode("ascii"))
    except (InvalidSignature, UnicodeEncodeError) as exc:
        raise TokenError("bad signature") from exc
    try:
        claims = InternalClaims.model_validate(body)
    except ValidationError as exc:
        raise TokenError("malformed claims") from exc
    if claims.iss != GATEWAY and (claims.sub != claims.iss or claims.roles != ["service"]):
        # Only the gateway authenticates agencies; a peer service vouches for itself alone.
        raise TokenError("a service may speak only for itself")
    current = time.time() if now is None else now
    if claims.exp + CLOCK_SKEW_SECONDS < current:
        raise TokenError("expired")
    return claims


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_binding(claims: InternalClaims, service: str | None, method: str, raw_path: str) -> bool:
    """A bound token is good for its service, method and path only. True when the call changes
    state, so the token's ``jti`` must not have been seen before."""
    if claims.aud is not None and service is not None and claims.aud != service:
        raise TokenError("issued for another service")
    if claims.htm is None:
        return False
    if claims.htm != method or claims.htu != raw_path:
        raise TokenError("issued for another call")
    return method in MUTATING


@dataclass
class TokenVerifier:
    """What a backend checks every internal token with: its callers' keys and its replay memory."""

    service: str | None  # None: no audience check (a test's stand-in for several services)
    callers: Mapping[str, Ed25519PublicKey]
    replay: ReplayMemory

    @classmethod
    def configured(cls, service: str, public_keys: str, redis_url: str | None) -> TokenVerifier:
        return cls(service, accepted_callers(service, public_keys), ReplayMemory(redis_url))

    async def check(self, token: str, method: str, raw_path: str) -> InternalClaims:
        claims = verify_token(self.callers, token)
        once = check_binding(claims, self.service, method, raw_path)
        if once and not await self.replay.first_use(claims.jti, claims.exp + CLOCK_SKEW_SECONDS):
            raise TokenError("already used")
        return claims
