"""FastAPI dependencies every service's routes share: the request's transaction and the caller.

Its job is turning a request into what routes need, so it imports FastAPI. The rules behind them
stay plain: tokens are verified by ``shared.tokens.TokenVerifier``, sessions made by SQLModel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shared.errors import ProblemError
from shared.tokens import HEADER, InternalClaims, TokenError, TokenVerifier


def get_session(request: Request) -> Iterator[Session]:
    """The request's session: the one place where a request's work is committed."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session
        session.commit()


def get_connection(request: Request) -> Iterator[Connection]:
    """The request's transaction (SQLAlchemy Core): committed when the route has returned, rolled
    back when it raised. Store functions take this connection and never commit themselves."""
    with request.app.state.engine.begin() as connection:
        yield connection


async def internal_claims(request: Request) -> InternalClaims:
    """The verified claims of the forwarded request, or 401."""
    token = request.headers.get(HEADER)
    if not token:
        raise ProblemError(
            401, "This service is reached only through the gateway.", slug="internal-token-missing"
        )
    verifier: TokenVerifier = request.app.state.token_verifier
    raw = request.scope.get("raw_path")
    raw_path = raw.decode("latin-1").partition("?")[0] if raw else request.url.path
    try:
        return await verifier.check(token, request.method, raw_path)
    except TokenError as exc:
        raise ProblemError(
            401, f"The internal token is not valid ({exc}).", slug="internal-token-invalid"
        ) from exc


ClaimsDep = Annotated[InternalClaims, Depends(internal_claims)]


async def require_admin(claims: ClaimsDep) -> InternalClaims:
    if not claims.is_admin:
        raise ProblemError(403, "Operators only.", slug="forbidden", rule="admin-only")
    return claims


AdminDep = Annotated[InternalClaims, Depends(require_admin)]
