"""Matching one chunk of records to people: exact on strong identifiers, then probabilistic
(Splink) where the exact pass found nobody; a person for every component of records, and
clerical review for the pairs left uncertain or in conflict. In the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select

from services.ingest.instants import iso
from services.ingest.linkage_fields import (
    COMPARED,
    IN_CHUNK,
    KEYS,
    STRONG,
    LinkageConfig,
    LinkOutcome,
    comparable,
    in_chunks,
    swapped_dob,
)
from services.ingest.linkage_model import comparison_row, predict
from services.ingest.tables import LINK, PERSON, REVIEW


class PersonComponents:
    """Union-find over records and known people that never joins two known people, nor two
    components that carry disjoint values of one kind of strong identifier (a person merged by
    review may hold two values of a kind; a record agreeing with either may join it)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.person: dict[str, int | None] = {}
        self.strong: dict[str, dict[str, frozenset[str]]] = {}

    def add(self, node: str, person: int | None, strong: Mapping[str, str | Iterable[str]]) -> None:
        if node not in self.parent:
            self.parent[node], self.person[node] = node, person
            self.strong[node] = {
                kind: frozenset((values,) if isinstance(values, str) else values)
                for kind, values in strong.items()
            }

    def find(self, node: str) -> str:
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def conflicting(self, a: str, b: str) -> bool:
        """Whether the two components hold disjoint values of one kind of strong identifier."""
        sa, sb = self.strong[self.find(a)], self.strong[self.find(b)]
        return any(kind in sa and sa[kind].isdisjoint(values) for kind, values in sb.items())

    def union(self, a: str, b: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        pa, pb = self.person[ra], self.person[rb]
        if pa is not None and pb is not None and pa != pb:
            return False
        if self.conflicting(ra, rb):
            return False
        sa, sb = self.strong[ra], self.strong[rb]
        self.parent[rb] = ra
        self.person[ra] = pa if pa is not None else pb
        self.strong[ra] = {
            kind: sa.get(kind, frozenset()) | sb.get(kind, frozenset()) for kind in {*sa, *sb}
        }
        return True


def _known_by_strong(
    connection: Connection, fresh: dict[int, dict[str, Any]]
) -> dict[tuple[str, str], dict[int, int]]:
    """(kind, value) → {person id: the first record of that person carrying it}."""
    found: dict[tuple[str, str], dict[int, int]] = {}
    for kind in STRONG:
        values = sorted({f[kind] for f in fresh.values() if f.get(kind)})
        column = LINK.c[kind]
        for part in in_chunks(values):
            query = (
                select(column, LINK.c.person_id, LINK.c.record_id)
                .where(column.in_(part))
                .order_by(LINK.c.person_id, LINK.c.record_id)
            )
            for value, person, record_id in connection.execute(query):
                found.setdefault((kind, value), {}).setdefault(person, record_id)
    return found


def _strong_of_people(connection: Connection, people: set[int]) -> dict[int, dict[str, set[str]]]:
    """Person id → every value of each strong identifier its records carry."""
    found: dict[int, dict[str, set[str]]] = {}
    query = select(LINK.c.person_id, *(LINK.c[kind] for kind in STRONG)).where(
        or_(*(LINK.c[kind].is_not(None) for kind in STRONG))
    )
    for part in in_chunks(sorted(people)):
        for row in connection.execute(query.where(LINK.c.person_id.in_(part))):
            held = found.setdefault(row.person_id, {})
            for kind in STRONG:
                if getattr(row, kind):
                    held.setdefault(kind, set()).add(getattr(row, kind))
    return found


_VARIANT = tuple(LINK.c[n] for n in ("person_id", *COMPARED, *KEYS))
_CANDIDATE_COLUMNS = (func.min(LINK.c.record_id).label("record_id"), *_VARIANT)


def _candidates(connection: Connection, fresh: dict[int, dict[str, Any]]) -> list[Any]:
    """Known records sharing a date of birth (or its transposition) or a surname and forename
    with a fresh comparable record: one per person and way of writing them down (its lowest
    record), so a person's many offences under one name are compared once. Forename and birth
    year stay a Splink blocking rule among these, not a key to fetch by: at a million people
    each such key holds hundreds of people, and a record with a date of birth is reached by it."""
    keys: dict[str, set[str]] = {"dob": set(), "name_key": set()}
    for fields in fresh.values():
        if fields.get("dob"):
            keys["dob"].add(fields["dob"])
            if swapped := swapped_dob(fields["dob"]):
                keys["dob"].add(swapped)
        if fields.get("name_key"):
            keys["name_key"].add(fields["name_key"])
    rows: dict[int, Any] = {}
    for name, values in keys.items():
        for part in in_chunks(sorted(values)):
            query = (
                select(*_CANDIDATE_COLUMNS)
                .where(LINK.c[name].in_(part), LINK.c.surname.is_not(None))
                .group_by(*_VARIANT)
            )
            for row in connection.execute(query):
                rows[row.record_id] = row
    return [row for record_id, row in rows.items() if record_id not in fresh]


def _new_people(connection: Connection, count: int, moment: datetime) -> list[int]:
    """Ids of ``count`` new people, in one statement per chunk."""
    made: list[int] = []
    statement = insert(PERSON).returning(PERSON.c.id, sort_by_parameter_order=True)
    for start in range(0, count, IN_CHUNK):
        rows = [{"created_at": iso(moment)}] * min(IN_CHUNK, count - start)
        made.extend(connection.execute(statement, rows).scalars())
    return made


class ChunkLinking:
    """One chunk's records linked in four steps: exact, probabilistic, a person for every
    component, then clerical review for the pairs left uncertain or in conflict."""

    def __init__(
        self,
        connection: Connection,
        fresh: dict[int, dict[str, Any]],
        meta: dict[int, tuple[str, str]],
        config: LinkageConfig,
        moment: datetime,
    ) -> None:
        self.connection = connection
        self.fresh = fresh
        self.meta = meta
        self.config = config
        self.moment = moment
        self.ids = sorted(fresh)
        self.components = PersonComponents()
        self.method: dict[int, str] = {}
        self.weight: dict[int, float] = {}
        self.matched: dict[int, int] = {}
        self.conflicts: list[tuple[int, int]] = []
        self.reviews: list[tuple[int, int, float | None, str]] = []

    def unlink(self) -> None:
        """The chunk's records lose their links and pending reviews: they are linked afresh."""
        for part in in_chunks(self.ids):
            self.connection.execute(delete(LINK).where(LINK.c.record_id.in_(part)))
            self.connection.execute(
                delete(REVIEW).where(
                    REVIEW.c.status == "pending",
                    or_(REVIEW.c.record_id.in_(part), REVIEW.c.candidate_record.in_(part)),
                )
            )

    def exact(self) -> None:
        """1. exact, on strong identifiers, against the known people and within the batch. A
        record whose identifiers point at two people, or at a person holding another value of one
        of its identifiers (same PNC ID, another NHS number), joins neither: it stays apart, and a
        review item pairs it with each person it pointed at (``conflicts``)."""
        components, method, conflicts = self.components, self.method, self.conflicts
        known = _known_by_strong(self.connection, self.fresh)
        pointed_people = {p for people in known.values() for p in people}
        strong_of_person = _strong_of_people(self.connection, pointed_people)
        first_with: dict[tuple[str, str], str] = {}
        for record_id in self.ids:
            fields = self.fresh[record_id]
            strong = {kind: fields[kind] for kind in STRONG if fields.get(kind)}
            node = f"n{record_id}"
            components.add(node, None, strong)
            pointed: dict[int, int] = {}  # person → a record of it sharing an identifier
            for kind, value in strong.items():
                for known_person, known_record in known.get((kind, value), {}).items():
                    pointed.setdefault(known_person, known_record)
            if len(pointed) > 1:
                conflicts.extend((record_id, known_record) for known_record in pointed.values())
                continue
            for known_person, known_record in pointed.items():
                person_node = f"p{known_person}"
                components.add(person_node, known_person, strong_of_person.get(known_person, {}))
                if components.union(node, person_node):
                    method[record_id] = "exact"
                else:
                    conflicts.append((record_id, known_record))
            for kind, value in strong.items():
                earlier = first_with.setdefault((kind, value), node)
                if earlier == node:
                    continue
                if components.union(earlier, node):
                    method.setdefault(record_id, "exact")
                else:
                    conflicts.append((record_id, int(earlier[1:])))

    def probabilistic(self, model: dict[str, Any] | None) -> None:
        """2. probabilistic, for comparable records the exact pass left without a known person."""
        components, fresh, config = self.components, self.fresh, self.config
        open_ids = [
            i
            for i in self.ids
            if comparable(fresh[i]) and components.person[components.find(f"n{i}")] is None
        ]
        self.reviews = [(rec, other, None, "conflict") for rec, other in self.conflicts]
        if model is None or not open_ids:
            return
        candidates = _candidates(self.connection, {i: fresh[i] for i in open_ids})
        rows = [comparison_row(f"n{i}", fresh[i], fresh=True) for i in open_ids]
        rows += [
            comparison_row(f"k{row.record_id}", row._mapping, fresh=False) for row in candidates
        ]
        person_of_known = {f"k{row.record_id}": row.person_id for row in candidates}
        # a known record stands for its whole person: every strong identifier the person has
        people = {row.person_id for row in candidates}
        strong_of_candidate = _strong_of_people(self.connection, people)
        strong_of_known = {
            f"k{row.record_id}": strong_of_candidate.get(row.person_id, {}) for row in candidates
        }
        pairs = sorted(
            predict(model, rows, config.review_weight, config.duckdb_memory), key=lambda p: -p[2]
        )
        for left, right, score in pairs:
            for node in (left, right):
                if node.startswith("k"):
                    components.add(node, person_of_known[node], strong_of_known[node])
            if score >= config.accept_weight and components.union(left, right):
                for node, other in ((left, right), (right, left)):
                    record_id = int(node[1:])
                    if node.startswith("n") and record_id not in self.method:
                        self.method[record_id] = "probabilistic"
                        self.weight[record_id] = score
                        self.matched[record_id] = int(other[1:])
            elif score < config.accept_weight:
                self.reviews.append((int(left[1:]), int(right[1:]), score, "weight"))
            elif components.conflicting(left, right):
                # as good as certain on names, yet another value of a strong identifier
                self.reviews.append((int(left[1:]), int(right[1:]), score, "conflict"))

    def assign(self, outcome: LinkOutcome) -> list[dict[str, Any]]:
        """3. a person for every component: the known one, or a new one; the links written."""
        components, fresh = self.components, self.fresh
        values: list[dict[str, Any]] = []
        sizes: dict[str, int] = {}
        for record_id in self.ids:
            root = components.find(f"n{record_id}")
            sizes[root] = sizes.get(root, 0) + 1
        unknown = [root for root in sizes if components.person[root] is None]
        made = _new_people(self.connection, len(unknown), self.moment)
        new_person = dict(zip(unknown, made, strict=True))
        outcome.new_people = len(unknown)
        outcome.created = list(new_person.values())
        conflicted = {record_id for record_id, _ in self.conflicts}
        for record_id in self.ids:
            root = components.find(f"n{record_id}")
            person = components.person[root]
            if person is None:
                person = new_person[root]
            # no method of its own but not alone: it shares a strong identifier within the batch
            how = self.method.get(record_id) or (
                "exact" if sizes[root] > 1 else "conflict" if record_id in conflicted else "new"
            )
            outcome.exact += how == "exact"
            outcome.probabilistic += how == "probabilistic"
            provider, dataset_name = self.meta[record_id]
            values.append(
                {
                    "record_id": record_id,
                    "person_id": person,
                    "provider": provider,
                    "dataset": dataset_name,
                    "method": how,
                    "match_weight": self.weight.get(record_id),
                    "matched_record": self.matched.get(record_id),
                    **{name: fresh[record_id].get(name) for name in (*STRONG, *COMPARED)},
                    **{name: fresh[record_id].get(name) for name in KEYS},
                    "linked_at": iso(self.moment),
                }
            )
        for part in in_chunks(values):
            self.connection.execute(insert(LINK), part)
        outcome.records = len(values)
        outcome.conflicts = len(conflicted)
        return values

    def queue_reviews(self, values: list[dict[str, Any]], outcome: LinkOutcome) -> None:
        """4. uncertain pairs, and records kept apart on conflicting identifiers, whose records
        ended with different people go to clerical review (once per pair: a decided pair stays
        decided)."""
        connection = self.connection
        person_by_record: dict[int, int] = {v["record_id"]: v["person_id"] for v in values}
        queued: set[tuple[int, int]] = set()
        for rec, cand, score_or_none, reason in self.reviews:
            pl = person_by_record.get(rec)
            pr = person_by_record.get(cand)
            if pl is None:
                rec, cand, pl, pr = cand, rec, pr, pl  # the fresh record first
            if pl is None:
                continue
            if pr is None:
                pr = connection.execute(
                    select(LINK.c.person_id).where(LINK.c.record_id == cand)
                ).scalar()
            if pr is None or pr == pl or (rec, pr) in queued or _reviewed(connection, rec, cand):
                continue
            queued.add((rec, pr))
            connection.execute(
                insert(REVIEW).values(
                    record_id=rec,
                    candidate_record=cand,
                    match_weight=score_or_none,
                    reason=reason,
                    status="pending",
                    created_at=iso(self.moment),
                )
            )
        outcome.queued = len(queued)


def _reviewed(connection: Connection, a: int, b: int) -> bool:
    """Whether the pair already has a review item, either way round."""
    pair = ((REVIEW.c.record_id == a) & (REVIEW.c.candidate_record == b)) | (
        (REVIEW.c.record_id == b) & (REVIEW.c.candidate_record == a)
    )
    return connection.execute(select(REVIEW.c.id).where(pair).limit(1)).first() is not None
