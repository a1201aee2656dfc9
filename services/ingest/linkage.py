"""Linking the records of one person across providers and datasets, inside ingest only.

Every stored record of a dataset with person fields (catalogue ``link = "..."``) gets a row in
``person_link`` naming its person. A batch is linked in its push transaction, before its outbox
row exists, so no event leaves without its person:

1. exact: records sharing a normalised PNC ID, CRO number or NHS number are one person;
2. probabilistic, where the exact pass found nobody: a Splink (DuckDB) model compares surname,
   first forename (nicknames folded), date of birth (day and month transposed tolerated) and
   postcode district against the known records that share a blocking key; a pair at or above
   the accept weight links, one between the review and the accept weight is queued for clerical
   review, and two records that carry different strong identifiers of one kind never link.

The model is trained on the hub's own records: u-probabilities by random sampling, m from the
pairs the exact pass already linked (``train``). Person ids never leave ingest; what leaves is a
keyed hash of the id under the linkage key (``person_pseudonym``, for level ``personal``) or
under a key derived from it for depersonalise only (``share_pseudonym``).

The jobs are apart: the person fields, configuration and outcome (``linkage_fields``), matching
one chunk (``linkage_matching``), the Splink model (``linkage_model``), the pseudonyms and handles
(``linkage_keys``), clerical review and the quality report (``linkage_review``). This module holds
what the push, retraction, purge, erasure and start-up call: linking a batch or a set of records,
forgetting records, re-linking the people they leave, re-sending records whose person changed, and
re-sending all after a key rotation. Import what the other modules hold from where it lives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, delete, insert, or_, select, update

from services.ingest.batches import insert_accepted_batch
from services.ingest.identity import revision_range
from services.ingest.instants import iso, utc_now
from services.ingest.linkage_fields import (
    COMPARED,
    STRONG,
    LinkageConfig,
    LinkOutcome,
    in_chunks,
    person_fields,
)
from services.ingest.linkage_keys import key_fingerprint
from services.ingest.linkage_matching import ChunkLinking
from services.ingest.linkage_model import current_model
from services.ingest.tables import KEY_IN_USE, LINK, OUTBOX, PERSON, RECORD, REVIEW
from shared.catalogue import Dataset
from shared.db import write_transaction

log = logging.getLogger("csp.ingest.linkage")

_decode = msgspec.json.Decoder().decode
LINK_CHUNK = 20_000  # records linked in one Splink pass


def link_records(
    connection: Connection,
    dataset_of: dict[str, Dataset],
    records: Sequence[Any],
    config: LinkageConfig,
    moment: datetime,
    probabilistic: bool = True,
) -> LinkOutcome:
    """Link stored records (rows with id, provider, dataset, data) in the caller's transaction;
    their earlier links (a correction) are replaced. ``probabilistic=False``: the exact pass
    alone (the benchmark's baseline). Large sets go in chunks, each seeing the ones before."""
    outcome = LinkOutcome()
    chunk = config.chunk_records or LINK_CHUNK
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        _add(outcome, _link_chunk(connection, dataset_of, part, config, moment, probabilistic))
    return outcome


def _add(total: LinkOutcome, part: LinkOutcome) -> None:
    for name in ("records", "exact", "probabilistic", "new_people", "queued", "conflicts"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.created.extend(part.created)


def _link_chunk(
    connection: Connection,
    dataset_of: dict[str, Dataset],
    records: Sequence[Any],
    config: LinkageConfig,
    moment: datetime,
    probabilistic: bool,
) -> LinkOutcome:
    outcome = LinkOutcome()
    fresh: dict[int, dict[str, Any]] = {}
    meta: dict[int, tuple[str, str]] = {}
    for row in records:
        dataset = dataset_of.get(row.dataset)
        if dataset is None or not dataset.link_fields:
            continue
        fresh[row.id] = person_fields(dataset, _decode(row.data))
        meta[row.id] = (row.provider, row.dataset)
    if not fresh:
        return outcome
    linking = ChunkLinking(connection, fresh, meta, config, moment)
    linking.unlink()
    linking.exact()
    linking.probabilistic(current_model(connection) if probabilistic else None)
    values = linking.assign(outcome)
    linking.queue_reviews(values, outcome)
    return outcome


def link_batch(
    connection: Connection,
    dataset: Dataset,
    batch_seq: int,
    config: LinkageConfig,
    moment: datetime,
    catalogue: Mapping[str, Dataset] | None = None,
) -> LinkOutcome:
    """Link the records a push just stored (its revision range), in the push transaction,
    a chunk at a time; the earlier links of corrected records go first, and the other records
    of the people those corrections leave are linked again (``relink_people``)."""
    start, end = revision_range(batch_seq)
    in_batch = select(RECORD.c.id).where(RECORD.c.revision > start, RECORD.c.revision < end)
    compared = (*STRONG, *COMPARED)
    earlier = {
        row.record_id: row
        for row in connection.execute(
            select(LINK.c.record_id, LINK.c.person_id, *(LINK.c[n] for n in compared)).where(
                LINK.c.record_id.in_(in_batch)
            )
        )
    }
    connection.execute(delete(LINK).where(LINK.c.record_id.in_(in_batch)))
    outcome = LinkOutcome()
    cursor = start
    while True:
        records = connection.execute(
            select(
                RECORD.c.id, RECORD.c.revision, RECORD.c.provider, RECORD.c.dataset, RECORD.c.data
            )
            .where(RECORD.c.revision > cursor, RECORD.c.revision < end)
            .order_by(RECORD.c.revision)
            .limit(config.chunk_records or LINK_CHUNK)
        ).all()
        if not records:
            break
        _add(
            outcome, _link_chunk(connection, {dataset.name: dataset}, records, config, moment, True)
        )
        cursor = records[-1].revision
    if earlier:
        # corrections that changed a person field or the person: the people they were part of
        now = {
            row.record_id: row
            for part in in_chunks(sorted(earlier))
            for row in connection.execute(
                select(LINK.c.record_id, LINK.c.person_id, *(LINK.c[n] for n in compared)).where(
                    LINK.c.record_id.in_(part)
                )
            )
        }
        left = {row.person_id for rid, row in earlier.items() if now.get(rid) != row}
        relink_people(
            connection, left, set(earlier), catalogue or {dataset.name: dataset}, config, moment
        )
    return outcome


def forget(
    connection: Connection,
    record_ids: list[int],
    catalogue: Mapping[str, Dataset] | None,
    config: LinkageConfig | None,
    moment: datetime,
) -> None:
    """Records going away (retraction, purge, erasure): their links and reviews go, the other
    records of their people are linked again without them (``relink_people``), and a person
    left with no record goes too."""
    if not record_ids:
        return
    people: set[int] = set()
    for part in in_chunks(record_ids):
        people.update(
            connection.execute(select(LINK.c.person_id).where(LINK.c.record_id.in_(part))).scalars()
        )
        connection.execute(delete(LINK).where(LINK.c.record_id.in_(part)))
        connection.execute(
            delete(REVIEW).where(
                or_(REVIEW.c.record_id.in_(part), REVIEW.c.candidate_record.in_(part))
            )
        )
    if catalogue is not None and config is not None:
        relink_people(connection, people, set(record_ids), catalogue, config, moment)
    else:
        _drop_empty_people(connection, people)


def relink_people(
    connection: Connection,
    people: set[int],
    leaving: set[int],
    catalogue: Mapping[str, Dataset],
    config: LinkageConfig,
    moment: datetime,
) -> int:
    """Link again every remaining record of ``people`` (not those ``leaving``), as if they
    arrived now: a record joined to its person only through one that left or changed goes its
    own way. The largest group of a person's records that no other known person claims keeps
    the person's id, so its pseudonym and handles stay; records whose person changed are sent
    to depersonalise again. Answers how many were re-sent."""
    if not people:
        return 0
    before: dict[int, int] = {}
    for part in in_chunks(sorted(people)):
        query = select(LINK.c.record_id, LINK.c.person_id).where(LINK.c.person_id.in_(part))
        before.update(
            {rid: person for rid, person in connection.execute(query) if rid not in leaving}
        )
    if before:
        rows = [
            row
            for part in in_chunks(sorted(before))
            for row in connection.execute(
                select(RECORD.c.id, RECORD.c.provider, RECORD.c.dataset, RECORD.c.data).where(
                    RECORD.c.id.in_(part)
                )
            )
        ]
        outcome = link_records(connection, dict(catalogue), rows, config, moment)
        after = people_of(connection, sorted(before))
        created = set(outcome.created)
        for person in sorted(people):
            groups: dict[int, list[int]] = {}
            for rid, old in before.items():
                if old == person and after.get(rid) in created:
                    groups.setdefault(after[rid], []).append(rid)
            if not groups or person in after.values():
                continue
            largest = min(groups, key=lambda new: (-len(groups[new]), min(groups[new])))
            connection.execute(
                update(LINK).where(LINK.c.person_id == largest).values(person_id=person)
            )
            connection.execute(delete(PERSON).where(PERSON.c.id == largest))
            created.discard(largest)
            for rid in groups[largest]:
                after[rid] = person
        changed = [rid for rid, old in before.items() if after.get(rid) != old]
        republish(connection, changed, moment)
    else:
        changed = []
    _drop_empty_people(connection, people)
    return len(changed)


def _drop_empty_people(connection: Connection, people: set[int]) -> None:
    for part in in_chunks(sorted(people)):
        held = select(LINK.c.person_id).where(LINK.c.person_id.in_(part))
        connection.execute(delete(PERSON).where(PERSON.c.id.in_(part), PERSON.c.id.not_in(held)))


def republish(connection: Connection, record_ids: Iterable[int], moment: datetime) -> int:
    """Send records whose person changed outside a push (re-linked after a retraction, merged by
    a review) to depersonalise again: each provider and dataset gets a ``relink`` batch whose
    revisions the records take, and an outbox row, so depersonalise replaces its copy."""
    ids = sorted(set(record_ids))
    groups: dict[tuple[str, str], list[int]] = {}
    for part in in_chunks(ids):
        query = select(RECORD.c.id, RECORD.c.provider, RECORD.c.dataset).where(
            RECORD.c.id.in_(part)
        )
        for record_id, provider, dataset in connection.execute(query):
            groups.setdefault((provider, dataset), []).append(record_id)
    for (provider, dataset), members in sorted(groups.items()):
        _, seq = insert_accepted_batch(
            connection, provider, dataset, "relink", len(members), moment
        )
        start, end = revision_range(seq)
        for number, record_id in enumerate(sorted(members), start=1):
            connection.execute(
                update(RECORD)
                .where(RECORD.c.id == record_id)
                .values(revision=start | number, batch_seq=seq)
            )
        connection.execute(
            insert(OUTBOX).values(
                kind="batch",
                batch_seq=seq,
                provider=provider,
                dataset=dataset,
                cursor=start,
                end=end,
                created_at=iso(moment),
            )
        )
    return sum(len(m) for m in groups.values())


def rekey(engine: Engine, config: LinkageConfig, chunk: int = 20_000) -> int:
    """At start: when the linkage key is not the one ingest last ran with (a rotation), send
    every linked record to depersonalise again, so it holds only pseudonyms under the new key
    (they are computed when sent; no stored hash needs rewriting). Answers the records re-sent."""
    fingerprint = key_fingerprint(config.key)
    with engine.connect() as connection:
        latest = connection.execute(
            select(KEY_IN_USE.c.fingerprint).order_by(KEY_IN_USE.c.id.desc()).limit(1)
        ).scalar()
    resent = 0
    if latest is not None and latest != fingerprint:
        after = 0
        while True:
            with write_transaction(engine) as connection:
                ids = list(
                    connection.execute(
                        select(LINK.c.record_id)
                        .where(LINK.c.record_id > after)
                        .order_by(LINK.c.record_id)
                        .limit(chunk)
                    ).scalars()
                )
                if not ids:
                    break
                resent += republish(connection, ids, utc_now())
            after = ids[-1]
        log.info("linkage key rotated: linked records re-sent", extra={"records": resent})
    if latest != fingerprint:
        with write_transaction(engine) as connection:
            connection.execute(delete(KEY_IN_USE).where(KEY_IN_USE.c.fingerprint == fingerprint))
            connection.execute(
                insert(KEY_IN_USE).values(fingerprint=fingerprint, since=iso(utc_now()))
            )
    return resent


def people_of(connection: Connection, record_ids: list[int]) -> dict[int, int]:
    """Record id → person id, for the records that have one."""
    found: dict[int, int] = {}
    for part in in_chunks(record_ids):
        query = select(LINK.c.record_id, LINK.c.person_id).where(LINK.c.record_id.in_(part))
        found.update({record_id: person for record_id, person in connection.execute(query)})
    return found
