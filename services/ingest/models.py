"""Ingest tables (on the service's own registry) and the public answer shapes.

Times are stored as UTC ISO 8601 strings (``2024-01-05T22:10:00Z``): they sort and compare as
text the same way on SQLite and PostgreSQL, and the bulk path writes them without conversion.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class Base(SQLModel, registry=registry()):
    pass


class Record(Base, table=True):
    """A validated raw record; (provider, dataset, source_ref) is its key."""

    __tablename__ = "record"
    __table_args__ = (
        UniqueConstraint("provider", "dataset", "source_ref", name="uq_record_key"),
        Index("ix_record_revision", "revision"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    source_ref: str = Field(max_length=64)
    # batch_seq << 24 | row: later pushes always carry a higher revision.
    revision: int = Field(sa_column=Column(BigInteger, nullable=False))
    batch_seq: int
    first_batch: int
    received_at: str = Field(max_length=20)
    occurred_at: str = Field(max_length=20)
    easting: float | None = None
    northing: float | None = None
    location_source: str = Field(max_length=12)
    late: bool = False
    corrections: int = 0
    unlisted: str | None = Field(default=None, max_length=255)
    data: str = Field(sa_column=Column(Text, nullable=False))


class Batch(Base, table=True):
    """One push, retraction or purge, with its counts."""

    __tablename__ = "batch"

    seq: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(max_length=32, unique=True)
    dataset: str = Field(max_length=64)
    provider: str = Field(max_length=64, index=True)
    kind: str = Field(max_length=12)
    status: str = Field(max_length=16)
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    corrections: int = 0
    unlocated: int = 0
    outside_gb: int = 0
    late: int = 0
    delivered: int = 0
    depersonalised: int = 0
    created_at: str = Field(max_length=20)


class Rejection(Base, table=True):
    """How many rows of one push a reason refused (the field and a generic message, no values)."""

    __tablename__ = "rejection"
    __table_args__ = (Index("ix_rejection_received", "provider", "dataset", "received_at"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_seq: int
    provider: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    received_at: str = Field(max_length=20)
    field: str | None = Field(default=None, max_length=64)
    reason: str = Field(max_length=200)
    rows: int


class Outbox(Base, table=True):
    """What the relay still owes depersonalise.

    A ``batch`` row stands for every record whose revision falls in that batch's range (the relay
    walks them in revision order with ``cursor``), so a million-row push writes one outbox row, not
    a million; a ``delete`` row carries one retraction.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=8)
    batch_seq: int
    provider: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    cursor: int = Field(sa_column=Column(BigInteger, nullable=False))
    end: int = Field(sa_column=Column(BigInteger, nullable=False))
    record_key: str | None = Field(default=None, max_length=64)
    delivered: bool = False
    created_at: str = Field(max_length=20)


class IdempotencyKey(Base, table=True):
    __tablename__ = "idempotency_key"

    agency: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status_code: int
    response: str = Field(sa_column=Column(Text, nullable=False))
    expires_at: str = Field(max_length=20, index=True)


class Postcode(Base, table=True):
    """The postcode layer: unit centroids in EPSG:27700, replaceable by ops."""

    __tablename__ = "postcode"

    postcode: str = Field(primary_key=True, max_length=8)
    easting: float
    northing: float


class PurgeLog(Base, table=True):
    __tablename__ = "purge_log"

    id: int | None = Field(default=None, primary_key=True)
    ran_at: str = Field(max_length=20)
    provider: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    retention_days: int
    cutoff: str = Field(max_length=20)
    deleted: int
    batch_id: str | None = Field(default=None, max_length=32)


class PersonalRead(Base, table=True):
    """Every personal-level read, with how many records it served."""

    __tablename__ = "personal_read"

    id: int | None = Field(default=None, primary_key=True)
    at: str = Field(max_length=20)
    agency: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    agreement: str | None = Field(default=None, max_length=64)
    version: int | None = None
    purpose: str | None = Field(default=None, max_length=64)
    records: int
    request_id: str | None = Field(default=None, max_length=128)


class BatchPublic(SQLModel):
    batch_id: str
    dataset: str
    status: str
    received: int
    accepted: int
    rejected: int
    delivered: int
    depersonalised: int
    kind: str
    corrections: int
    unlocated: int
    late: int
    created_at: str


class RecordError(SQLModel):
    row: int
    field: str | None = None
    message: str


class PushAnswer(SQLModel):
    """The 202 answer to a push (and to its repetition under the same Idempotency-Key)."""

    batch_id: str
    received: int
    accepted: int
    rejected: int
    errors: list[RecordError]
    errors_total: int | None = None


# --- person linkage (services/ingest/linkage.py) ----------------------------------------------


class Person(Base, table=True):
    """One person the hub knows of; its id never leaves ingest (pseudonyms are keyed hashes)."""

    __tablename__ = "person"

    id: int | None = Field(default=None, primary_key=True)
    created_at: str = Field(max_length=20)


class PersonLink(Base, table=True):
    """Which person a stored record is about, how that was decided, and the record's person
    fields normalised for comparison (ingest-only, removed with the record)."""

    __tablename__ = "person_link"
    __table_args__ = (
        Index("ix_person_link_person", "person_id"),
        Index("ix_person_link_pnc", "pnc"),
        Index("ix_person_link_cro", "cro"),
        Index("ix_person_link_nhs", "nhs"),
        Index("ix_person_link_dob", "dob"),
        Index("ix_person_link_name_key", "name_key"),
        Index("ix_person_link_forename_year", "forename_year"),
        Index("ix_person_link_matched", "matched_record"),
    )

    record_id: int = Field(primary_key=True)
    person_id: int
    provider: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    method: str = Field(max_length=16)
    match_weight: float | None = None
    matched_record: int | None = None
    pnc: str | None = Field(default=None, max_length=16)
    cro: str | None = Field(default=None, max_length=16)
    nhs: str | None = Field(default=None, max_length=10)
    surname: str | None = Field(default=None, max_length=100)
    forename: str | None = Field(default=None, max_length=100)
    dob: str | None = Field(default=None, max_length=10)
    district: str | None = Field(default=None, max_length=4)
    forename_year: str | None = Field(default=None, max_length=110)
    name_key: str | None = Field(default=None, max_length=210)
    linked_at: str = Field(max_length=20)


class LinkReview(Base, table=True):
    """A pair for clerical review: ``weight`` (a match weight between the review and the accept
    weight) or ``conflict`` (a strong identifier shared, another one disagreeing: kept apart);
    accepting moves the record's person into the other's."""

    __tablename__ = "link_review"
    __table_args__ = (
        UniqueConstraint("record_id", "candidate_record", name="uq_link_review_pair"),
        Index("ix_link_review_status", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    record_id: int
    candidate_record: int
    match_weight: float | None = None
    reason: str = Field(
        default="weight", max_length=10, sa_column_kwargs={"server_default": "weight"}
    )
    status: str = Field(max_length=10)
    created_at: str = Field(max_length=20)
    decided_at: str | None = Field(default=None, max_length=20)
    decided_by: str | None = Field(default=None, max_length=64)


class LinkageModel(Base, table=True):
    """A trained probabilistic linkage model (Splink's JSON), the latest one in force."""

    __tablename__ = "linkage_model"

    id: int | None = Field(default=None, primary_key=True)
    trained_at: str = Field(max_length=20)
    records: int
    labelled_pairs: int
    model: str = Field(sa_column=Column(Text, nullable=False))


class ErasureRequest(SQLModel):
    """An operator's erasure of a provider's records of a dataset (subject access / erasure)."""

    provider: str = Field(min_length=1, max_length=64)
    dataset: str = Field(min_length=1, max_length=64)
    source_refs: list[str] | None = Field(
        default=None, min_length=1, max_length=10_000, description="only these; all when absent"
    )


class LinkageKeyInUse(Base, table=True):
    """Fingerprints of the linkage keys ingest has run with (never the key): a new one at start
    means the key was rotated, and every linked record is re-sent under the new pseudonyms."""

    __tablename__ = "linkage_key"

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64, unique=True)
    since: str = Field(max_length=20)
