"""Issuing a key: which scopes and expiry a request may give a new key, and storing it.

An agency's key may hold ``push``, ``read`` and ``sign``; ``admin`` is for operators' keys only.
An expiry is a moment or a date (the key then works through that whole day, UTC) and must lie in
the future. The key itself is shown once, in the answer; only its hash is stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time

from sqlalchemy.engine import Connection

from services.gateway import keys
from services.gateway.schemas import KeyIssued, KeyRequest
from shared.errors import ProblemError


@dataclass(frozen=True)
class KeyTerms:
    agency: str
    scopes: list[str] | None  # None: every scope the agency may hold
    holder: str | None
    expires_at: float | None


def key_terms(agency: str, wanted: KeyRequest, now: float | None = None) -> KeyTerms:
    """The terms of the key ``wanted`` for ``agency``, or a 422 naming the field at fault."""
    allowed = keys.scopes_for(agency)
    outside = [scope for scope in wanted.scopes or () if scope not in allowed]
    if outside:
        raise ProblemError(
            422, f"Only operators' keys may hold {outside[0]!r}.", slug="invalid", field="scopes"
        )
    try:
        expires_at = expiry(wanted.expires)
    except (OverflowError, ValueError) as exc:
        raise ProblemError(
            422, "The expiry is out of range.", slug="invalid", field="expires"
        ) from exc
    if expires_at is not None and expires_at <= (time.time() if now is None else now):
        raise ProblemError(422, "The expiry is not in the future.", slug="invalid", field="expires")
    scopes: list[str] | None = (
        [name for name in allowed if name in wanted.scopes] if wanted.scopes else None
    )
    return KeyTerms(agency, scopes, wanted.holder, expires_at)


def issue(connection: Connection, terms: KeyTerms) -> KeyIssued:
    """A new key on ``terms``, stored (as its hash) in the caller's transaction."""
    key_id, key = keys.new_key()
    keys.store_key(
        connection,
        terms.agency,
        keys.roles_for(terms.agency),
        key,
        scopes=terms.scopes,
        holder=terms.holder,
        expires_at=terms.expires_at,
        origin="api",
    )
    return KeyIssued(
        key_id=key_id,
        key=key,
        holder=terms.holder,
        scopes=terms.scopes or list(keys.scopes_for(terms.agency)),
        expires=None if terms.expires_at is None else iso(terms.expires_at),
    )


def expiry(value: datetime | date | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    # A date: the key works through that whole day.
    return datetime.combine(value + timedelta(days=1), dt_time(0), UTC).timestamp()


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
