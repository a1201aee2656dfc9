"""API keys: ``csp_<key_id>_<secret>``, stored only as SHA-256 hashes, looked up through a cache.

The cache lives ``key_cache_seconds`` (0.5 s), so a revocation reaches every replica within a
second without a database read per request. Last-used times are kept in memory and written in
one statement every few seconds. Store functions take the caller's connection and never commit:
a route's transaction is its request's (``deps.ConnectionDep``), the start's and the last-used
flush's are ``main.py``'s.

A key has scopes (``push``, ``read``, ``sign``, and ``admin`` for operators only), an optional
holder (the person it is issued to: kept with the key, never in the audit chain, which names the
key id) and an optional expiry. The operators' key given at start (``CSP_ADMIN_KEY``) retires the
one installed by the previous start.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from services.gateway.models import ApiKey
from shared.db import in_read_transaction, table_of

KEYS = table_of(ApiKey)

log = logging.getLogger("csp.gateway.keys")

KEY_PATTERN = re.compile(r"^csp_([0-9a-f]{12})_[A-Za-z0-9_-]{20,128}$")
OPS_AGENCY = "ops"
MAX_CACHED = 50_000
PUSH, READ, SIGN, ADMIN = "push", "read", "sign", "admin"
AGENCY_SCOPES = (PUSH, READ, SIGN)
OPERATOR_SCOPES = (*AGENCY_SCOPES, ADMIN)
START = "start"


def scopes_for(agency: str) -> tuple[str, ...]:
    """Every scope a key of this agency may hold."""
    return OPERATOR_SCOPES if agency == OPS_AGENCY else AGENCY_SCOPES


def roles_for(agency: str) -> list[str]:
    return ["agency", "admin"] if agency == OPS_AGENCY else ["agency"]


@dataclass(frozen=True)
class Caller:
    agency: str
    roles: tuple[str, ...]
    key_id: str
    scopes: frozenset[str] = frozenset(OPERATOR_SCOPES)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True)
class StoredKey:
    caller: Caller
    key_hash: str
    revoked: bool
    expires_at: float | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str:
    """The key's public prefix; a key in another format (an operator-chosen CSP_ADMIN_KEY) gets
    an id derived from its hash."""
    match = KEY_PATTERN.match(key)
    if match:
        return match.group(1)
    return "x" + hash_key(key)[:15]


def new_key() -> tuple[str, str]:
    key_id = secrets.token_hex(6)
    return key_id, f"csp_{key_id}_{secrets.token_urlsafe(32)}"


def store_key(
    connection: Connection,
    agency: str,
    roles: list[str],
    key: str,
    *,
    scopes: list[str] | None = None,
    holder: str | None = None,
    expires_at: float | None = None,
    origin: str | None = None,
) -> str:
    """Store the key's hash; ``scopes`` None means every scope its agency may hold."""
    key_id = key_id_of(key)
    connection.execute(
        insert(KEYS).values(
            key_id=key_id,
            agency=agency,
            roles=",".join(roles),
            key_hash=hash_key(key),
            created_at=time.time(),
            scopes=None if scopes is None else ",".join(scopes),
            holder=holder,
            expires_at=expires_at,
            origin=origin,
        )
    )
    return key_id


def revoke_key(connection: Connection, agency: str, key_id: str) -> bool:
    result = connection.execute(
        update(KEYS)
        .where(KEYS.c.key_id == key_id, KEYS.c.agency == agency, KEYS.c.revoked_at.is_(None))
        .values(revoked_at=time.time())
    )
    return bool(result.rowcount)


def ensure_operator_key(connection: Connection, configured: str | None) -> str | None:
    """Install ``CSP_ADMIN_KEY`` and retire the operators' key an earlier start installed;
    without it create one on first start. Returns a new key to print once, or None.

    Keys issued through the API to the ops agency (one per operator) are not touched."""
    if configured:
        _install_operator_key(connection, configured)
        return None
    exists = connection.execute(
        select(KEYS.c.key_id).where(KEYS.c.agency == OPS_AGENCY).limit(1)
    ).first()
    if exists is not None:
        return None
    _, key = new_key()
    store_key(connection, OPS_AGENCY, roles_for(OPS_AGENCY), key, origin=START)
    return key


def _install_operator_key(connection: Connection, configured: str) -> None:
    key_id = key_id_of(configured)
    row = connection.execute(
        select(KEYS.c.key_hash, KEYS.c.revoked_at).where(KEYS.c.key_id == key_id)
    ).first()
    if row is None:
        connection.execute(
            insert(KEYS).values(
                key_id=key_id,
                agency=OPS_AGENCY,
                roles="agency,admin",
                key_hash=hash_key(configured),
                created_at=time.time(),
                origin=START,
            )
        )
    previous = (
        KEYS.c.agency == OPS_AGENCY,
        KEYS.c.key_id != key_id,
        KEYS.c.revoked_at.is_(None),
        # Rows from before origins were kept are start keys: the API never made them.
        KEYS.c.origin.is_(None) | (KEYS.c.origin == START),
    )
    retired = connection.execute(select(KEYS.c.key_id).where(*previous)).all()
    if retired:
        connection.execute(update(KEYS).where(*previous).values(revoked_at=time.time()))
    for (old,) in retired:
        log.warning("previous operators' key retired", extra={"key_id": old})


def record_last_used(connection: Connection, used: dict[str, float]) -> int:
    """Last-used times (key id → when) written in one statement."""
    if not used:
        return 0
    statement = (
        update(KEYS).where(KEYS.c.key_id == bindparam("kid")).values(last_used_at=bindparam("used"))
    )
    connection.execute(statement, [{"kid": k, "used": t} for k, t in used.items()])
    return len(used)


def stored_key(connection: Connection, key_id: str) -> StoredKey | None:
    """The key, its caller (agency, roles, scopes) and whether it is revoked; None if unknown."""
    row = connection.execute(
        select(
            KEYS.c.agency,
            KEYS.c.roles,
            KEYS.c.key_hash,
            KEYS.c.revoked_at,
            KEYS.c.scopes,
            KEYS.c.expires_at,
        ).where(KEYS.c.key_id == key_id)
    ).first()
    if row is None:
        return None
    allowed = scopes_for(row[0])
    scopes = frozenset(allowed if row[4] is None else row[4].split(",")) & set(allowed)
    # A key without the admin scope acts as an agency key, here and in the backends.
    roles = tuple(r for r in row[1].split(",") if r and (r != ADMIN or ADMIN in scopes))
    caller = Caller(row[0], roles, key_id, scopes)
    return StoredKey(caller, row[2], row[3] is not None, row[5])


class KeyStore:
    """Authenticates bearer keys against the table through a short-lived cache."""

    def __init__(self, engine: Engine, ttl_seconds: float) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}
        self._inflight: dict[str, asyncio.Future[StoredKey | None]] = {}
        self._used: dict[str, float] = {}

    async def authenticate(self, key: str) -> Caller | None:
        stored = await self.valid(key_id_of(key))
        if stored is None or not hmac.compare_digest(stored.key_hash, hash_key(key)):
            return None
        self.used(stored.caller.key_id)
        return stored.caller

    def used(self, key_id: str) -> None:
        self._used[key_id] = time.time()

    async def valid(self, key_id: str) -> StoredKey | None:
        """The key with this id if it is neither revoked nor expired (through the cache).
        Access tokens are checked against their key this way on every use."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.ttl:
            stored = cached[1]
        else:
            stored = await self._load(key_id)
        if stored is None or stored.revoked:
            return None
        if stored.expires_at is not None and time.time() >= stored.expires_at:
            return None
        return stored

    async def _load(self, key_id: str) -> StoredKey | None:
        # One database read per key per TTL, however many requests arrive meanwhile.
        inflight = self._inflight.get(key_id)
        if inflight is not None:
            return await inflight
        future: asyncio.Future[StoredKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[key_id] = future
        try:
            stored = await asyncio.to_thread(self._read, key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters re-raise it
            raise
        finally:
            self._inflight.pop(key_id, None)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key_id] = (time.monotonic(), stored)
        future.set_result(stored)
        return stored

    def _read(self, key_id: str) -> StoredKey | None:
        # The cache reads before any route runs, so on a connection of its own.
        return in_read_transaction(self.engine, stored_key, key_id)

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    def take_last_used(self) -> dict[str, float]:
        """The last-used times gathered since the previous call (for ``record_last_used``)."""
        used, self._used = self._used, {}
        return used
