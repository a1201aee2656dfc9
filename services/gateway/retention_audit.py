"""Retention purges in the audit chain.

Ingest purges records on its own schedule, so no request passes through the gateway when it does.
The gateway takes ingest's purge log in (``GET /internal/purges?after=<id>``) and writes one audit
entry per purge that erased records: phase ``retention``, action ``erase``, the provider whose
records went in ``providers`` (so the provider's own view shows it) and the count in ``records``.
How far it has read is kept in ``audit_import``, moved in the same transaction as the entries and
only from the value it read, so two replicas never both record a purge. This loop owns its
reads; the entries and the cursor are written by the audit log's writer (``append_guarded``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from services.gateway.audit import AuditLog
from services.gateway.audit_chain import Guard
from services.gateway.audit_entries import now_iso
from services.gateway.models import AuditImport
from services.gateway.upstream import Upstream, call_json
from shared.db import in_read_transaction, table_of

log = logging.getLogger("csp.gateway.retention")
IMPORT = table_of(AuditImport)
SOURCE = "ingest-purges"
PAGE = 500


def read_cursor(connection: Connection, source: str = SOURCE) -> int:
    found = connection.execute(select(IMPORT.c.last_id).where(IMPORT.c.source == source)).scalar()
    return int(found or 0)


def cursor_guard(old: int, new: int, source: str = SOURCE) -> Guard:
    """Moves the cursor from ``old`` to ``new`` in the entries' transaction; False when another
    replica already moved it (it then recorded these purges itself)."""

    def guard(cursor: Any, marker: str) -> bool:
        cursor.execute(
            f"UPDATE audit_import SET last_id = {marker} WHERE source = {marker}"
            f" AND last_id = {marker}",
            (new, source, old),
        )
        if cursor.rowcount == 1:
            return True
        cursor.execute(f"SELECT last_id FROM audit_import WHERE source = {marker}", (source,))
        if cursor.fetchone() is not None:
            return False
        cursor.execute(
            f"INSERT INTO audit_import (source, last_id) VALUES ({marker}, {marker})",
            (source, new),
        )
        return True

    return guard


def purge_entry(purge: dict[str, Any]) -> dict[str, Any]:
    days = int(purge["retention_days"])
    erasure = days == 0  # an operator's POST /v1/erasures, logged by ingest as a purge
    return {
        "at": now_iso(),
        "request_id": f"purge-{purge['id']}",
        "phase": "retention",
        "agency": None,
        "key_id": None,
        "method": "JOB",
        "route": "erasure" if erasure else "retention purge",
        "dataset": purge["dataset"],
        "action": "erase",
        "level": None,
        "purpose": None,
        "rule": "erasure-on-request" if erasure else f"retention-{days}-days",
        "agreement": None,
        "version": None,
        "providers": [purge["provider"]],
        "status": 200,
        "outcome": "allowed",
        "records": int(purge["deleted"]),
    }


async def take_in_purges(
    audit: AuditLog, ingest: Upstream, token: str, engine: Engine, page: int = PAGE
) -> int:
    """Records every purge ingest logged since the last time; returns how many entries it wrote."""
    written = 0
    while audit.enabled:
        after = await asyncio.to_thread(in_read_transaction, engine, read_cursor)
        status, body = await call_json(
            ingest, "GET", f"/internal/purges?after={after}&limit={page}", token
        )
        if status != 200:
            raise RuntimeError(f"ingest answered {status}")
        purges = body["purges"]
        if not purges:
            return written
        entries = [purge_entry(p) for p in purges if p["deleted"]]
        if not await audit.append_guarded(entries, cursor_guard(after, int(purges[-1]["id"]))):
            return written  # another replica recorded these
        written += len(entries)
        if len(purges) < page:
            return written
    return written


async def keep_taking_in(
    audit: AuditLog,
    ingest: Upstream,
    token: Callable[[], str],
    engine: Engine,
    seconds: float,
) -> None:
    """Every ``seconds``; a failure (ingest down, audit store down) waits for the next round."""
    while True:
        await asyncio.sleep(seconds)  # first after a round: the peers start alongside
        try:
            written = await take_in_purges(audit, ingest, token(), engine)
        except Exception as exc:  # noqa: BLE001 - retried next round; never takes the gateway down
            log.warning("retention purges not taken in", extra={"error": type(exc).__name__})
        else:
            if written:
                log.info("retention purges recorded", extra={"n": written})
