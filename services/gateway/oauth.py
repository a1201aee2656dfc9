"""OAuth2 client credentials (RFC 6749 section 4.4): access tokens for partner systems.

The client id is a key id and the client secret is the API key itself. An access token is a JWT
signed by the hub with its own Ed25519 key (never the internal secret), short-lived, carrying the
key id, the agency and the scopes granted. The key is checked again on every use of a token, so a
revoked or expired key's tokens stop working within the key cache's lifetime.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.gateway.keys import Caller, KeyStore

log = logging.getLogger("csp.gateway.oauth")

ISSUER = "csp-hub"
ALGORITHM = "EdDSA"
GRANT_TYPE = "client_credentials"
MAX_FORM_BYTES = 8192


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``error`` is the RFC's code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Grant:
    access_token: str
    expires_in: int
    scope: str


def load_private_key(
    pem: str | None, path: str | None, default_path: Path | None
) -> Ed25519PrivateKey:
    """The signing key from the setting, from a file, or generated into ``default_path`` (mode 0600)
    on first use; without any of them a key for this process only."""
    if pem:
        return _parse(pem.encode())
    if path:
        return _parse(Path(path).read_bytes())
    if default_path is None:
        log.warning("OAuth signing key held in memory only: set CSP_GATEWAY_OAUTH_SIGNING_KEY_FILE")
        return Ed25519PrivateKey.generate()
    if default_path.exists():
        return _parse(default_path.read_bytes())
    key = Ed25519PrivateKey.generate()
    default_path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(default_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return key


def _parse(data: bytes) -> Ed25519PrivateKey:
    """PEM (PKCS8), or the base64 of a 32-byte Ed25519 seed (as the audit's key is given)."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except binascii.Error as exc:
            raise ValueError("the OAuth signing key is neither PEM nor base64") from exc
        return Ed25519PrivateKey.from_private_bytes(seed)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the OAuth signing key must be an Ed25519 private key (PEM, PKCS8)")
    return key


class TokenIssuer:
    """Issues and verifies the hub's access tokens."""

    def __init__(self, private_key: Ed25519PrivateKey, ttl_seconds: int) -> None:
        self._private = private_key
        self._public: Ed25519PublicKey = private_key.public_key()
        self.ttl = ttl_seconds

    def issue(self, caller: Caller, scopes: list[str], key_expires_at: float | None) -> Grant:
        now = int(time.time())
        expires = now + self.ttl
        if key_expires_at is not None:
            expires = min(expires, int(key_expires_at))
        scope = " ".join(scopes)
        claims = {
            "iss": ISSUER,
            "aud": ISSUER,
            "sub": caller.agency,
            "key_id": caller.key_id,
            "scope": scope,
            "iat": now,
            "exp": expires,
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, self._private, algorithm=ALGORITHM)
        return Grant(token, max(expires - now, 0), scope)

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired token signed by this hub; None otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=ISSUER,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "key_id", "scope"]},
            )
        except jwt.PyJWTError:
            return None
        if not isinstance(claims.get("key_id"), str) or not isinstance(claims.get("scope"), str):
            return None
        return claims


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and not value.startswith("csp_")


async def authenticate(issuer: TokenIssuer, store: KeyStore, token: str) -> Caller | None:
    """The caller of an access token: its key must still be valid, and the token's scopes are
    narrowed to what the key holds now."""
    claims = issuer.verify(token)
    if claims is None:
        return None
    stored = await store.valid(claims["key_id"])
    if stored is None or stored.caller.agency != claims["sub"]:
        return None
    caller = stored.caller
    store.used(caller.key_id)
    scopes = frozenset(claims["scope"].split()) & caller.scopes
    roles = tuple(r for r in caller.roles if r != "admin" or "admin" in scopes)
    return Caller(caller.agency, roles, caller.key_id, scopes)


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a member given twice is an error."""
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError(400, "invalid_request", "The form is too large.")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise OAuthError(400, "invalid_request", "The form is not URL-encoded.") from exc
    parsed = parse_qs(text, keep_blank_values=True)
    repeated = [name for name, values in parsed.items() if len(values) > 1]
    if repeated:
        raise OAuthError(400, "invalid_request", f"The member {repeated[0]!r} is repeated.")
    return {name: values[0] for name, values in parsed.items()}


def client_credentials(authorization: str | None, form: dict[str, str]) -> tuple[str, str]:
    """The client id and secret from HTTP Basic or the form (not both, RFC 6749 2.3.1)."""
    in_form = "client_id" in form or "client_secret" in form
    if authorization is not None and authorization[:6].lower() == "basic ":
        if in_form:
            raise OAuthError(400, "invalid_request", "Give the credentials one way only.")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            raise OAuthError(401, "invalid_client", "The Basic credentials are malformed.") from exc
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise OAuthError(401, "invalid_client", "The Basic credentials are malformed.")
        return unquote(client_id), unquote(secret)
    if not in_form:
        raise OAuthError(401, "invalid_client", "Client credentials are required.")
    return form.get("client_id", ""), form.get("client_secret", "")


async def grant(
    issuer: TokenIssuer, store: KeyStore, authorization: str | None, form: dict[str, str]
) -> Grant:
    """Answer a token request: check the grant type, the client and the scope asked for."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(400, "invalid_request", "The member 'grant_type' is required.")
    client_id, secret = client_credentials(authorization, form)
    if grant_type != GRANT_TYPE:
        raise OAuthError(
            400, "unsupported_grant_type", f"Only grant_type={GRANT_TYPE} is supported."
        )
    caller = await store.authenticate(secret) if secret else None
    if caller is None or caller.key_id != client_id:
        raise OAuthError(401, "invalid_client", "The client id or secret is not valid.")
    held = [name for name in sorted(caller.scopes)]
    asked = form.get("scope")
    if asked is None or not asked.strip():
        scopes = held
    else:
        wanted = asked.split()
        outside = [name for name in wanted if name not in caller.scopes]
        if outside:
            raise OAuthError(400, "invalid_scope", f"This key does not hold {outside[0]!r}.")
        scopes = [name for name in held if name in wanted]
    stored = await store.valid(caller.key_id)
    return issuer.issue(caller, scopes, None if stored is None else stored.expires_at)
