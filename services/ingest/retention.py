"""Retention: records held longer than the agreements allow are deleted here and, through delete
events, from depersonalise. Age counts from when the hub received the record; once no agreement in
force covers a provider's dataset (the rule carries ``ended``), every record of it goes
``retention_days`` after that day. A purge or erasure owns its transactions, one per chunk of
records deleted and one for its log entry, so a large one never holds the store for long."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, desc, insert, select, true

from services.ingest.instants import iso, utc_now
from services.ingest.retraction import Linkage, delete_records
from services.ingest.tables import PURGE_LOG, RECORD

log = logging.getLogger("csp.ingest.retention")


def purge(
    engine: Engine,
    secret: str,
    rules: list[dict[str, Any]],
    now: datetime | None = None,
    chunk: int = 5000,
    linkage: Linkage | None = None,
) -> list[dict[str, Any]]:
    """Apply ``[{"provider", "dataset", "retention_days", "ended"?}]``; one log entry per rule."""
    moment = now or utc_now()
    entries = []
    for rule in rules:
        provider, dataset = str(rule["provider"]), str(rule["dataset"])
        days = int(rule["retention_days"])
        cutoff = iso(moment - timedelta(days=days))
        ended = rule.get("ended")
        if ended and moment.date() >= date.fromisoformat(str(ended)) + timedelta(days=days):
            cutoff = iso(moment + timedelta(seconds=1))  # no legal basis left: everything goes
        deleted, batch_id = _delete_where(
            engine,
            secret,
            provider,
            dataset,
            RECORD.c.received_at < cutoff,
            moment,
            chunk,
            linkage,
        )
        entry = {
            "ran_at": iso(moment),
            "provider": provider,
            "dataset": dataset,
            "retention_days": days,
            "cutoff": cutoff,
            "deleted": deleted,
            "batch_id": batch_id,
        }
        with engine.begin() as connection:
            connection.execute(insert(PURGE_LOG).values(**entry))
        log.info(
            "purge",
            extra={"provider": provider, "dataset": dataset, "deleted": deleted, "days": days},
        )
        entries.append(entry)
    return entries


def _delete_where(
    engine: Engine,
    secret: str,
    provider: str,
    dataset: str,
    condition: Any,
    moment: datetime,
    chunk: int,
    linkage: Linkage | None,
) -> tuple[int, str | None]:
    """Delete, chunk by chunk, the provider's records of the dataset that meet ``condition``."""
    deleted = 0
    batch_id = None
    while True:
        with engine.begin() as connection:
            old = connection.execute(
                select(RECORD.c.id, RECORD.c.source_ref)
                .where(RECORD.c.provider == provider, RECORD.c.dataset == dataset, condition)
                .limit(chunk)
            ).all()
            if not old:
                return deleted, batch_id
            batch_id = delete_records(
                connection,
                secret,
                provider,
                dataset,
                [tuple(r) for r in old],
                "purge",
                moment,
                linkage,
            )
            deleted += len(old)


# retention_days 0 in the purge log marks an erasure an operator asked for, not a schedule.
ERASURE_DAYS = 0


def erase(
    engine: Engine,
    secret: str,
    provider: str,
    dataset: str,
    source_refs: list[str] | None,
    now: datetime | None = None,
    chunk: int = 5000,
    linkage: Linkage | None = None,
) -> dict[str, Any]:
    """Erase a provider's records of a dataset (all, or those with these references) raw and,
    through delete events, derived; logged like a purge so the audit chain records it."""
    moment = now or utc_now()
    condition = true() if source_refs is None else RECORD.c.source_ref.in_(source_refs)
    deleted, batch_id = _delete_where(
        engine, secret, provider, dataset, condition, moment, chunk, linkage
    )
    entry = {
        "ran_at": iso(moment),
        "provider": provider,
        "dataset": dataset,
        "retention_days": ERASURE_DAYS,
        "cutoff": iso(moment),
        "deleted": deleted,
        "batch_id": batch_id,
    }
    with engine.begin() as connection:
        connection.execute(insert(PURGE_LOG).values(**entry))
    log.info("erasure", extra={"provider": provider, "dataset": dataset, "deleted": deleted})
    return entry


def purge_history(connection: Connection, limit: int = 200) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(PURGE_LOG).order_by(desc(PURGE_LOG.c.id)).limit(limit)
    ).mappings()
    return [dict(row) for row in rows]


def purges_after(connection: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Purge log entries in the order they were written, for the gateway's audit to take in."""
    rows = connection.execute(
        select(PURGE_LOG).where(PURGE_LOG.c.id > after).order_by(PURGE_LOG.c.id).limit(limit)
    ).mappings()
    return [dict(row) for row in rows]
