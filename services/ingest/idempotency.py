"""Idempotency-Key: a push repeated under the same key gets the first answer, once.

The first answer is stored with the batch, in its transaction (``service.push``); this module
decides what a push with a key gets: the stored answer (same request), 422 (the key came with
another request), 409 (the first is still running in this process) or a fresh run. Two replicas
running the same key at once race on the stored row's primary key: the loser answers as the
winner did.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from services.ingest.instants import iso, utc_now
from services.ingest.tables import IDEMPOTENCY
from shared.db import in_read_transaction, write_transaction
from shared.errors import ProblemError

Answer = dict[str, Any]


def fingerprint(*parts: str) -> str:
    """What a repeat must match: the request's method, path, query, body digest and type."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def stored_answer(
    connection: Connection, agency: str, key: str, fingerprint: str, moment: datetime | None = None
) -> Answer | None:
    """The first answer for this agency's key; 422 if the key came with another request."""
    row = connection.execute(
        select(IDEMPOTENCY.c.fingerprint, IDEMPOTENCY.c.response).where(
            IDEMPOTENCY.c.agency == agency,
            IDEMPOTENCY.c.key == key,
            IDEMPOTENCY.c.expires_at > iso(moment or utc_now()),
        )
    ).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        raise ProblemError(
            422,
            "This Idempotency-Key was used with a different request.",
            slug="idempotency-key-reused",
            field="Idempotency-Key",
        )
    answer: Answer = msgspec.json.decode(row.response)
    return answer


def remember(
    connection: Connection,
    agency: str,
    idempotency: tuple[str, str, int] | None,
    moment: datetime,
    answer: Answer,
) -> None:
    """Keep a push's first answer under its key (key, fingerprint, hours), in its transaction."""
    if idempotency is None:
        return
    key, request_fingerprint, hours = idempotency
    connection.execute(
        insert(IDEMPOTENCY).values(
            agency=agency,
            key=key,
            fingerprint=request_fingerprint,
            status_code=202,
            response=msgspec.json.encode(answer).decode(),
            expires_at=iso(moment + timedelta(hours=hours)),
        )
    )


def forget_expired_keys(engine: Engine, moment: datetime | None = None) -> int:
    with write_transaction(engine) as connection:
        result = connection.execute(
            delete(IDEMPOTENCY).where(IDEMPOTENCY.c.expires_at <= iso(moment or utc_now()))
        )
    return int(result.rowcount or 0)


@dataclass
class InFlight:
    """The (agency, key) pairs of pushes this process is running now."""

    running: set[tuple[str, str]] = field(default_factory=set)

    @contextmanager
    def hold(self, agency: str, key: str) -> Iterator[None]:
        """Marks the pair running for the block; 409 if it already is."""
        slot = (agency, key)
        if slot in self.running:
            raise ProblemError(
                409,
                "A request with this Idempotency-Key is still being processed.",
                slug="idempotency-key-in-use",
                field="Idempotency-Key",
            )
        self.running.add(slot)
        try:
            yield
        finally:
            self.running.discard(slot)


def look_up(engine: Engine, agency: str, key: str, request_fingerprint: str) -> Answer | None:
    """``stored_answer`` on a connection of its own (a push's, outside any request transaction)."""
    return in_read_transaction(engine, stored_answer, agency, key, request_fingerprint)


async def push_once(
    engine: Engine,
    in_flight: InFlight,
    agency: str,
    key: str | None,
    request_fingerprint: str,
    run: Callable[[], Awaitable[Answer]],
) -> tuple[Answer, bool]:
    """The push's answer and whether it is the stored first answer given again (``run`` is not
    called then). Without a key, ``run`` is simply run.

    A push writes in chunks, each in a transaction of its own (``service.push``), so it holds no
    request transaction; its look-ups read on a connection of their own, here."""
    if key is None:
        return await run(), False
    first = await asyncio.to_thread(look_up, engine, agency, key, request_fingerprint)
    if first is not None:
        return first, True
    with in_flight.hold(agency, key):
        try:
            return await run(), False
        except IntegrityError:
            # Another replica committed the same key first: answer as it did.
            first = await asyncio.to_thread(look_up, engine, agency, key, request_fingerprint)
            if first is None:
                raise
            return first, False
