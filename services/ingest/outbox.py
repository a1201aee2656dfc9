"""The outbox relay to depersonalise, and the replay of current records as events.

Events go out in outbox order, a batch's records in revision order, so a record's events always
arrive in the order they happened; a record replaced before it was delivered is sent once, in its
latest form. Progress is saved only after depersonalise answers 2xx, and depersonalise ignores a
revision it already has, so a redelivery after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
from sqlalchemy import Connection, Engine, Row, func, select, update

from services.ingest.identity import record_key, revision_range
from services.ingest.linkage import people_of
from services.ingest.linkage_keys import share_pseudonym
from services.ingest.tables import BATCH, OUTBOX, RECORD
from shared.catalogue import Dataset
from shared.db import in_read_transaction, in_write_transaction
from shared.holdings import revision_digest
from shared.periods import parse_iso
from shared.tokens import HEADER, TokenKey, service_token

log = logging.getLogger("csp.ingest.relay")

_decode = msgspec.json.Decoder().decode
# Every answer settles the event: `stale` means depersonalise already holds a newer revision of the
# record (a correction or retraction that came later), so this batch's row is accounted for.
DEPERSONALISED = {"stored", "deleted", "skipped", "stale"}


def shareable_fields(dataset: Dataset) -> frozenset[str]:
    """Fields an event may carry: never identifiers; a cohort only its attributes and dates."""
    if dataset.kind == "cohort":
        keep = {"attribute", "datetime"}
        return frozenset(f.name for f in dataset.fields if f.classification in keep)
    return frozenset(f.name for f in dataset.fields if f.classification != "identifier")


def _batch_ids(connection: Connection, seqs: set[int]) -> dict[int, str]:
    query = select(BATCH.c.seq, BATCH.c.batch_id).where(BATCH.c.seq.in_(seqs))
    return {seq: batch_id for seq, batch_id in connection.execute(query)}


def _still_pending(connection: Connection, seqs: set[int]) -> set[int]:
    query = select(OUTBOX.c.batch_seq).where(
        OUTBOX.c.batch_seq.in_(seqs), OUTBOX.c.delivered.is_(False)
    )
    return {seq for (seq,) in connection.execute(query)}


def settle_batch(connection: Connection, seq: int) -> None:
    """Every outbox row of the batch is delivered: rows it held that a later correction or
    retraction replaced before they went out are settled too (their newer revision went instead),
    so ``delivered`` and ``depersonalised`` reach ``accepted``, each row counted once."""
    connection.execute(
        update(BATCH)
        .where(BATCH.c.seq == seq, BATCH.c.delivered < BATCH.c.accepted)
        .values(
            depersonalised=BATCH.c.depersonalised + (BATCH.c.accepted - BATCH.c.delivered),
            delivered=BATCH.c.accepted,
        )
    )


@dataclass
class Relay:
    engine: Engine
    client: httpx.AsyncClient
    secret: str  # the record key secret (record_key), never a token key
    token_key: TokenKey
    catalogue: dict[str, Dataset]
    batch_events: int = 500
    linkage_key: str | None = None

    def people(self, connection: Connection, records: list[Row[Any]]) -> dict[int, str]:
        """Record id → the depersonalise-only pseudonym of its person (linked records only)."""
        if self.linkage_key is None or not records:
            return {}
        linking = {name for name, d in self.catalogue.items() if d.link_fields}
        if not any(r.dataset in linking for r in records):
            return {}
        found = people_of(connection, [r.id for r in records])
        return {rid: share_pseudonym(self.linkage_key, person) for rid, person in found.items()}

    def upsert_event(
        self, row: Row[Any], batch_id: str | None, person: str | None = None
    ) -> dict[str, Any]:
        dataset = self.catalogue.get(row.dataset)
        keep = shareable_fields(dataset) if dataset is not None else frozenset()
        located = row.location_source != "none" and dataset is not None
        if dataset is not None and dataset.kind == "cohort":
            located = False
        data = _decode(row.data)
        return {
            "event_id": row.revision,
            "op": "upsert",
            "dataset": row.dataset,
            "provider": row.provider,
            "record_key": record_key(self.secret, row.provider, row.dataset, row.source_ref),
            "revision": row.revision,
            "batch_id": batch_id,
            "received_at": row.received_at,
            "location_source": row.location_source if located else "none",
            "easting": row.easting if located else None,
            "northing": row.northing if located else None,
            "record": {k: v for k, v in data.items() if k in keep},
            "person": person,
        }

    def collect(
        self, connection: Connection
    ) -> tuple[list[dict[str, Any]], list[tuple[int, int, bool, int]]]:
        """Up to ``batch_events`` events, and per outbox row (id, new cursor, done, batch_seq)."""
        events: list[dict[str, Any]] = []
        progress: list[tuple[int, int, bool, int]] = []
        pending = connection.execute(
            select(OUTBOX).where(OUTBOX.c.delivered.is_(False)).order_by(OUTBOX.c.id).limit(50)
        ).all()
        batch_ids = _batch_ids(connection, {row.batch_seq for row in pending})
        for row in pending:
            room = self.batch_events - len(events)
            if room <= 0:
                break
            batch_id = batch_ids.get(row.batch_seq)
            if row.kind == "delete":
                events.append(
                    {
                        "event_id": row.cursor,
                        "op": "delete",
                        "dataset": row.dataset,
                        "provider": row.provider,
                        "record_key": row.record_key,
                        "revision": row.cursor,
                        "batch_id": batch_id,
                    }
                )
                progress.append((row.id, row.cursor, True, row.batch_seq))
                continue
            records = connection.execute(
                select(RECORD)
                .where(RECORD.c.revision > row.cursor, RECORD.c.revision < row.end)
                .order_by(RECORD.c.revision)
                .limit(room)
            ).all()
            people = self.people(connection, list(records))
            events.extend(self.upsert_event(r, batch_id, people.get(r.id)) for r in records)
            cursor = records[-1].revision if records else row.cursor
            progress.append((row.id, cursor, len(records) < room, row.batch_seq))
        return events, progress

    def save(
        self,
        connection: Connection,
        events: list[dict[str, Any]],
        progress: list[tuple[int, int, bool, int]],
        results: list[dict[str, Any]],
    ) -> None:
        """The outbox rows' progress and the batches' counts, once depersonalise has answered."""
        seq_of = {e["event_id"]: e["event_id"] >> 24 for e in events}
        delivered = Counter(seq_of.values())
        depersonalised = Counter(
            seq_of[r["event_id"]]
            for r in results
            if r.get("event_id") in seq_of and r.get("status") in DEPERSONALISED
        )
        for outbox_id, cursor, done, seq in progress:
            connection.execute(
                update(OUTBOX).where(OUTBOX.c.id == outbox_id).values(cursor=cursor, delivered=done)
            )
            if done:
                connection.execute(
                    update(BATCH).where(BATCH.c.seq == seq).values(status="delivered")
                )
        for seq, count in delivered.items():
            connection.execute(
                update(BATCH)
                .where(BATCH.c.seq == seq)
                .values(
                    delivered=BATCH.c.delivered + count,
                    depersonalised=BATCH.c.depersonalised + depersonalised.get(seq, 0),
                )
            )
        finished = {seq for _id, _cursor, done, seq in progress if done}
        for seq in sorted(finished - _still_pending(connection, finished)):
            settle_batch(connection, seq)

    async def run_once(self) -> int:
        """Deliver one batch of events; the number delivered (0 when nothing is pending). A round
        owns two transactions, both here: it reads what is pending, and writes the progress only
        after depersonalise has answered 2xx."""
        events, progress = await asyncio.to_thread(in_read_transaction, self.engine, self.collect)
        if not progress:
            return 0
        results: list[dict[str, Any]] = []
        if events:
            token = service_token(self.token_key, "depersonalise", "POST", "/internal/events")
            response = await self.client.post(
                "/internal/events", json={"events": events}, headers={HEADER: token}
            )
            response.raise_for_status()
            results = response.json().get("results") or []
        await asyncio.to_thread(
            in_write_transaction, self.engine, self.save, events, progress, results
        )
        return len(events) or len(progress)

    async def drain(self, max_rounds: int = 10_000) -> int:
        """Deliver until nothing is pending (tests and shutdown)."""
        total = 0
        for _ in range(max_rounds):
            sent = await self.run_once()
            if not sent:
                break
            total += sent
        return total

    async def run_forever(self, interval: float, backoff_max: float) -> None:
        backoff = interval
        while True:
            try:
                sent = await self.run_once()
                backoff = interval
                if not sent:
                    await asyncio.sleep(interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep relaying whatever failed this round
                log.warning(
                    "relay failed, backing off",
                    extra={"error": type(exc).__name__, "seconds": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, backoff_max)

    def replay(
        self,
        connection: Connection,
        dataset: str,
        after: int,
        limit: int,
        provider: str | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The current records of a dataset (of one provider, if given) as upsert events, in
        revision order."""
        where = [RECORD.c.dataset == dataset, RECORD.c.revision > after]
        if provider is not None:
            where.append(RECORD.c.provider == provider)
        records = connection.execute(
            select(RECORD).where(*where).order_by(RECORD.c.revision).limit(limit)
        ).all()
        batch_ids = _batch_ids(connection, {r.batch_seq for r in records})
        people = self.people(connection, list(records))
        events = [
            self.upsert_event(r, batch_ids.get(r.batch_seq), people.get(r.id)) for r in records
        ]
        following = records[-1].revision if len(records) == limit else None
        return events, following


def holdings(connection: Connection, dataset: str) -> dict[str, Any]:
    """Per provider of a dataset: how many records are held raw, and their revision digest; and
    the ``horizon``: every revision given out so far is below it."""
    by_provider: dict[str, list[int]] = {}
    last_seq = connection.execute(select(func.max(BATCH.c.seq))).scalar() or 0
    rows = connection.execute(
        select(RECORD.c.provider, RECORD.c.revision).where(RECORD.c.dataset == dataset)
    )
    for provider, revision in rows:
        by_provider.setdefault(provider, []).append(revision)
    return {
        "dataset": dataset,
        "horizon": revision_range(last_seq)[1],
        "holdings": [
            {"provider": p, "count": len(r), "digest": revision_digest(r)}
            for p, r in sorted(by_provider.items())
        ],
    }


def outbox_figures(connection: Connection, moment: datetime | None = None) -> dict[str, float]:
    """Outbox rows not yet delivered, the records they still hold, and the oldest one's age."""
    depth, oldest = connection.execute(
        select(func.count(), func.min(OUTBOX.c.created_at)).where(OUTBOX.c.delivered.is_(False))
    ).one()
    pending = connection.execute(
        select(func.coalesce(func.sum(BATCH.c.accepted - BATCH.c.delivered), 0)).where(
            BATCH.c.seq.in_(select(OUTBOX.c.batch_seq).where(OUTBOX.c.delivered.is_(False)))
        )
    ).scalar_one()
    age = 0.0
    if oldest:
        created = parse_iso(str(oldest))
        age = max(((moment or datetime.now(UTC)) - created).total_seconds(), 0.0)
    return {"depth": float(depth), "pending_records": float(pending), "oldest_age_seconds": age}
