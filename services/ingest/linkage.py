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

Over 400 lines because linking a batch, re-linking after a correction, retraction or rekey, and
the model they score with share the person fields, the components and the link rows; clerical
review and the quality report are apart (``linkage_review``). The Splink model (``train``,
``_predict``) is the next part to move out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, delete, func, insert, or_, select, update

from services.ingest.batches import insert_accepted_batch
from services.ingest.identity import revision_range
from services.ingest.instants import iso, utc_now
from services.ingest.tables import (
    KEY_IN_USE,
    LINK,
    MODEL,
    OUTBOX,
    PERSON,
    RECORD,
    REVIEW,
    inserted_id,
)
from shared.catalogue import Dataset
from shared.db import write_transaction
from shared.errors import ProblemError
from shared.identifiers import first_forename, normalise_name, postcode_district

log = logging.getLogger("csp.ingest.linkage")


STRONG = ("pnc", "cro", "nhs")
COMPARED = ("surname", "forename", "dob", "district")
KEYS = ("forename_year", "name_key")  # blocking keys, indexed for finding candidates
_decode = msgspec.json.Decoder().decode
_IN_CHUNK = 500
LINK_CHUNK = 20_000  # records linked in one Splink pass


@dataclass(frozen=True)
class LinkageConfig:
    """The linkage key (ingest only) and the partnership's thresholds, as match weights."""

    key: str
    accept_weight: float = 6.0
    review_weight: float = 0.0
    min_training_records: int = 50
    chunk_records: int | None = None
    """Records linked in one Splink pass (None: ``LINK_CHUNK``); smaller bounds memory."""
    duckdb_memory: str = "2GB"
    """DuckDB's memory limit for a Splink pass; beyond it DuckDB spills to a temporary folder."""


@dataclass
class LinkOutcome:
    records: int = 0
    exact: int = 0
    probabilistic: int = 0
    new_people: int = 0
    queued: int = 0
    conflicts: int = 0
    created: list[int] = field(default_factory=list)


def person_pseudonym(key: str, person_id: int) -> str:
    """The person's pseudonym inside the hub (level ``personal`` at most)."""
    return hmac.new(key.encode(), f"person/{person_id}".encode(), hashlib.sha256).hexdigest()


def share_pseudonym(key: str, person_id: int) -> str:
    """The depersonalise-only pseudonym: the same id under a key derived from the linkage key,
    so it can count distinct people but matches nothing ingest publishes."""
    derived = hmac.new(key.encode(), b"csp-depersonalise-pseudonym", hashlib.sha256).digest()
    return hmac.new(derived, f"person/{person_id}".encode(), hashlib.sha256).hexdigest()


def person_handle(key: str, recipient: str, person_id: int) -> str:
    """The case view's name for a person, issued to one recipient only: it matches neither the
    hub's pseudonym nor any other recipient's handle of the same person."""
    derived = hmac.new(key.encode(), b"csp-case-view-handle", hashlib.sha256).digest()
    text = f"{recipient}/person/{person_id}".encode()
    return "p-" + hmac.new(derived, text, hashlib.sha256).hexdigest()[:32]


def person_fields(dataset: Dataset, data: dict[str, Any]) -> dict[str, str | None]:
    """A stored record's person fields, normalised for comparison (values already validated)."""
    out: dict[str, str | None] = dict.fromkeys((*STRONG, *COMPARED, *KEYS))
    for name, kind in dataset.link_fields.items():
        value = data.get(name)
        if value is None or value == "":
            continue
        if kind in STRONG:
            out[kind] = str(value)
        elif kind == "surname":
            out["surname"] = normalise_name(str(value)) or None
        elif kind == "forenames":
            out["forename"] = first_forename(str(value)) or None
        elif kind == "date_of_birth":
            out["dob"] = str(value)
        elif kind == "postcode":
            out["district"] = postcode_district(str(value))
    if out["forename"] and out["dob"]:
        out["forename_year"] = f"{out['forename']}|{out['dob'][:4]}"
    if out["surname"] and out["forename"]:
        out["name_key"] = f"{out['surname']}|{out['forename']}"
    return out


def _comparable(fields: dict[str, Any]) -> bool:
    return bool(fields.get("surname")) and bool(fields.get("dob") or fields.get("forename"))


def _swapped(dob: str | None) -> str | None:
    """``1990-05-03`` → ``1990-03-05`` (None where the day cannot be a month)."""
    if not dob or int(dob[8:10]) > 12:
        return None
    return f"{dob[:4]}-{dob[8:10]}-{dob[5:7]}"


# --- the probabilistic model ------------------------------------------------------------------

# Candidate pairs: the same date of birth (or transposed), surname and forename, forename and
# birth year, or forename and postcode district; ``fresh`` keeps only pairs with a new record.
_BLOCKS = (
    "l.dob = r.dob",
    "l.dob = r.dob_swapped",
    "l.name_key = r.name_key",
    "l.forename_year = r.forename_year",
    "l.district = r.district AND l.forename = r.forename",
)


def _settings() -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator

    dob = cl.CustomComparison(
        output_column_name="dob",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob"),
            cll.ColumnsReversedLevel("dob", "dob_swapped").configure(
                label_for_charts="day and month transposed"
            ),
            cll.DamerauLevenshteinLevel("dob", 1),
            cll.ElseLevel(),
        ],
    )
    surname = cl.CustomComparison(
        output_column_name="surname",
        comparison_levels=[
            cll.NullLevel("surname"),
            cll.ExactMatchLevel("surname"),
            cll.JaroWinklerLevel("surname", 0.92),
            # one slip, however short the name (cox / cxo, ali / ail)
            cll.DamerauLevenshteinLevel("surname", 1),
            cll.JaroWinklerLevel("surname", 0.8),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[
            surname,
            cl.JaroWinklerAtThresholds("forename", [0.92, 0.8]),
            dob,
            cl.ExactMatch("district"),
        ],
        blocking_rules_to_generate_predictions=[{"blocking_rule": rule} for rule in _BLOCKS],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def _table(rows: Iterable[dict[str, Any]]) -> Any:
    import pyarrow as pa

    columns = ("unique_id", "label", "fresh", *COMPARED, "dob_swapped", *KEYS)
    listed = list(rows)
    return pa.table({name: [row.get(name) for row in listed] for name in columns})


def _comparison_row(unique_id: str, fields: Mapping[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "unique_id": unique_id,
        **{name: fields.get(name) for name in (*COMPARED, *KEYS)},
        "dob_swapped": _swapped(fields.get("dob")),
        **extra,
    }


def train(engine: Engine, config: LinkageConfig, seed: int = 42) -> dict[str, Any]:
    """Train the model on the records the hub holds and make it the one in force."""
    from splink import DuckDBAPI, Linker

    with engine.connect() as connection:
        rows = [
            _comparison_row(f"r{row.record_id}", row._mapping, label=row.person_id)
            for row in connection.execute(
                select(LINK).where(LINK.c.surname.is_not(None)).order_by(LINK.c.record_id)
            )
        ]
    sizes: dict[int, int] = {}
    for row in rows:
        sizes[row["label"]] = sizes.get(row["label"], 0) + 1
    labelled = sum(n * (n - 1) // 2 for n in sizes.values())
    if len(rows) < config.min_training_records or labelled == 0:
        raise ProblemError(
            409,
            f"Training needs at least {config.min_training_records} records with names and "
            "some people already linked on an exact identifier.",
            slug="linkage-not-enough-data",
            records=len(rows),
            labelled_pairs=labelled,
        )
    api = DuckDBAPI(_duckdb(config.duckdb_memory))
    linker = Linker(api.register(_table(rows)), _settings(), log_level=logging.ERROR)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e5, seed=seed)
    linker.training.estimate_m_from_label_column("label")
    model: dict[str, Any] = linker.misc.save_model_to_json()
    total_pairs = len(rows) * (len(rows) - 1) // 2
    model["probability_two_random_records_match"] = max(labelled / total_pairs, 1e-9)
    moment = iso(utc_now())
    with engine.begin() as connection:
        model_id = inserted_id(
            connection.execute(
                insert(MODEL).values(
                    trained_at=moment,
                    records=len(rows),
                    labelled_pairs=labelled,
                    model=json.dumps(model),
                )
            )
        )
    return {
        "model": model_id,
        "trained_at": moment,
        "records": len(rows),
        "labelled_pairs": labelled,
    }


def current_model(connection: Connection) -> dict[str, Any] | None:
    row = connection.execute(select(MODEL.c.model).order_by(MODEL.c.id.desc()).limit(1)).first()
    return None if row is None else dict(json.loads(row.model))


def _duckdb(memory: str) -> Any:
    """An in-memory DuckDB bounded to ``memory`` that spills to a private temporary folder."""
    import duckdb

    connection = duckdb.connect(":memory:")
    spill = Path(tempfile.gettempdir()) / "csp-linkage-duckdb"
    spill.mkdir(mode=0o700, exist_ok=True)
    connection.execute(f"SET memory_limit = '{memory}'")
    connection.execute(f"SET temp_directory = '{spill}'")
    connection.execute("SET preserve_insertion_order = false")
    return connection


def _predict(
    model: dict[str, Any], rows: list[dict[str, Any]], min_weight: float, memory: str = "2GB"
) -> list[tuple[str, str, float]]:
    """Scored pairs (unique id, unique id, match weight) with at least one fresh record."""
    from splink import DuckDBAPI, Linker

    settings = dict(model)
    settings["blocking_rules_to_generate_predictions"] = [
        {"blocking_rule": f"({rule}) AND (l.fresh OR r.fresh)"} for rule in _BLOCKS
    ]
    api = DuckDBAPI(_duckdb(memory))
    linker = Linker(api.register(_table(rows)), settings, log_level=logging.ERROR)
    scored = linker.inference.predict(threshold_match_weight=min_weight)
    relation = scored.as_duckdbpyrelation()
    pairs = relation.select("unique_id_l, unique_id_r, match_weight").fetchall()
    return [(str(a), str(b), float(w)) for a, b, w in pairs]


# --- linking a batch ----------------------------------------------------------------------------


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


def in_chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield list(values[start : start + _IN_CHUNK])


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
            if swapped := _swapped(fields["dob"]):
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
    for start in range(0, count, _IN_CHUNK):
        rows = [{"created_at": iso(moment)}] * min(_IN_CHUNK, count - start)
        made.extend(connection.execute(statement, rows).scalars())
    return made


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
    linking = _ChunkLinking(connection, fresh, meta, config, moment)
    linking.unlink()
    linking.exact()
    linking.probabilistic(current_model(connection) if probabilistic else None)
    values = linking.assign(outcome)
    linking.queue_reviews(values, outcome)
    return outcome


class _ChunkLinking:
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
            if _comparable(fresh[i]) and components.person[components.find(f"n{i}")] is None
        ]
        self.reviews = [(rec, other, None, "conflict") for rec, other in self.conflicts]
        if model is None or not open_ids:
            return
        candidates = _candidates(self.connection, {i: fresh[i] for i in open_ids})
        rows = [_comparison_row(f"n{i}", fresh[i], fresh=True) for i in open_ids]
        rows += [
            _comparison_row(f"k{row.record_id}", row._mapping, fresh=False) for row in candidates
        ]
        person_of_known = {f"k{row.record_id}": row.person_id for row in candidates}
        # a known record stands for its whole person: every strong identifier the person has
        people = {row.person_id for row in candidates}
        strong_of_candidate = _strong_of_people(self.connection, people)
        strong_of_known = {
            f"k{row.record_id}": strong_of_candidate.get(row.person_id, {}) for row in candidates
        }
        pairs = sorted(
            _predict(model, rows, config.review_weight, config.duckdb_memory), key=lambda p: -p[2]
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


def key_fingerprint(key: str) -> str:
    """Names a linkage key without revealing it (a keyed hash of a constant)."""
    return hmac.new(key.encode(), b"csp-linkage-key-fingerprint", hashlib.sha256).hexdigest()


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


def config_from(
    key: str | None,
    accept: float,
    review: float,
    min_training_records: int,
    chunk_records: int | None = None,
    duckdb_memory: str = "2GB",
) -> LinkageConfig | None:
    """The linkage configuration from ingest's settings; None (no linkage) without a key."""
    if not key:
        return None
    if review > accept:
        raise ValueError("the review weight must not exceed the accept weight")
    return LinkageConfig(key, accept, review, min_training_records, chunk_records, duckdb_memory)
