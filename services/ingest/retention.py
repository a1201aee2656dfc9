"""Retention: records held longer than the agreements allow are deleted here and, through delete
events, from depersonalise. Age counts from when the hub received the record; once no agreement in
force covers a provider's dataset (the rule carries ``ended``), every record of it goes
``retention_days`` after that day. A purge or erasure owns its transactions, one per chunk of
records deleted and one for its log entry (``_Deletion.run``, the one place they are opened), so a
large one never holds the store for long."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, desc, insert, select, true

from services.ingest.instants import iso, utc_now
from services.ingest.retraction import Linkage, delete_records
from services.ingest.tables import PURGE_LOG, RECORD
from shared.db import in_write_transaction

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
        deletion = _Deletion(engine, secret, provider, dataset, moment, chunk, linkage)
        entry = deletion.run(RECORD.c.received_at < cutoff, days, cutoff)
        log.info(
            "purge",
            extra={
                "provider": provider,
                "dataset": dataset,
                "deleted": entry["deleted"],
                "days": days,
            },
        )
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class _Deletion:
    """One provider's records of one dataset deleted and logged (a purge rule, an erasure)."""

    engine: Engine
    secret: str
    provider: str
    dataset: str
    moment: datetime
    chunk: int
    linkage: Linkage | None

    def run(self, condition: Any, retention_days: int, cutoff: str) -> dict[str, Any]:
        """Its transactions, all here: one per chunk of records deleted, then one for its entry
        in the purge log."""
        deleted, batch_id = 0, None
        while True:
            count, batch = in_write_transaction(self.engine, self.delete_chunk, condition)
            if not count:
                break
            deleted, batch_id = deleted + count, batch
        entry = {
            "ran_at": iso(self.moment),
            "provider": self.provider,
            "dataset": self.dataset,
            "retention_days": retention_days,
            "cutoff": cutoff,
            "deleted": deleted,
            "batch_id": batch_id,
        }
        in_write_transaction(self.engine, _log_entry, entry)
        return entry

    def delete_chunk(self, connection: Connection, condition: Any) -> tuple[int, str | None]:
        """Up to ``chunk`` of the records that meet ``condition`` deleted; how many, and the
        batch that carries their delete events."""
        old = connection.execute(
            select(RECORD.c.id, RECORD.c.source_ref)
            .where(RECORD.c.provider == self.provider, RECORD.c.dataset == self.dataset, condition)
            .limit(self.chunk)
        ).all()
        if not old:
            return 0, None
        batch_id = delete_records(
            connection,
            self.secret,
            self.provider,
            self.dataset,
            [tuple(r) for r in old],
            "purge",
            self.moment,
            self.linkage,
        )
        return len(old), batch_id


def _log_entry(connection: Connection, entry: dict[str, Any]) -> None:
    connection.execute(insert(PURGE_LOG).values(**entry))


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
    deletion = _Deletion(engine, secret, provider, dataset, moment, chunk, linkage)
    entry = deletion.run(condition, ERASURE_DAYS, iso(moment))
    log.info(
        "erasure", extra={"provider": provider, "dataset": dataset, "deleted": entry["deleted"]}
    )
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
