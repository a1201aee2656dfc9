"""Tables and wire schemas of the depersonalise service.

No table holds a precise location, an identifier, free text or an address: derived records carry
only area codes, the generalised point, the period and the kept attributes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    LargeBinary,
    SmallInteger,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel


class Base(SQLModel, registry=registry()):
    pass


class GeographyLayerRow(Base, table=True):
    """One version of a layer: ``pending`` until the rebuild that uses it completes."""

    __tablename__ = "geography_layer"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(index=True, max_length=64)
    status: str = SQLField(default="pending", max_length=16)
    source_crs: str = SQLField(default="EPSG:27700", max_length=200)
    code_field: str = SQLField(default="code", max_length=100)
    name_field: str | None = SQLField(default=None, max_length=100)
    area_count: int = 0
    repaired: int = 0
    derived_from: str | None = SQLField(default=None, max_length=64)
    loaded_at: datetime


class GeographyAreaRow(Base, table=True):
    __tablename__ = "geography_area"
    __table_args__ = (Index("ix_geography_area_layer", "layer_id"),)
    id: int | None = SQLField(default=None, primary_key=True)
    layer_id: int
    code: str = SQLField(max_length=64)
    name: str = SQLField(max_length=255)
    geometry: bytes = SQLField(sa_column=Column(LargeBinary, nullable=False))


class SnapLayerRow(Base, table=True):
    """Anonymous map points (BNG metres) with the household count of each catchment."""

    __tablename__ = "snap_layer"
    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(index=True, max_length=64)
    status: str = SQLField(default="pending", max_length=16)
    points: bytes = SQLField(sa_column=Column(LargeBinary, nullable=False))
    report: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))
    loaded_at: datetime


class PopulationRow(Base, table=True):
    __tablename__ = "population"
    __table_args__ = (UniqueConstraint("layer", "code"),)
    id: int | None = SQLField(default=None, primary_key=True)
    layer: str = SQLField(index=True, max_length=64)
    code: str = SQLField(max_length=64)
    population: float


class DerivedRecord(Base, table=True):
    """A depersonalised record of one generation (a rebuild writes the next generation)."""

    __tablename__ = "derived_record"
    __table_args__ = (
        # With the provider (record keys are unique across providers anyway): Citus needs the
        # distribution column in every unique constraint (deploy/README.md, national scale).
        UniqueConstraint("generation", "provider", "record_key", name="uq_derived_record_key"),
        Index("ix_derived_dataset", "generation", "dataset", "provider", "deleted"),
        Index("ix_derived_page", "generation", "dataset", "id"),
        Index("ix_derived_person", "generation", "dataset", "person"),
        Index("ix_derived_category", "generation", "dataset", "category"),
    )
    id: int | None = SQLField(default=None, primary_key=True)
    generation: int
    record_key: str = SQLField(max_length=128)
    dataset: str = SQLField(max_length=64)
    provider: str = SQLField(max_length=64)
    revision: int
    deleted: bool = False
    period_start: date | None = None
    occurred_on: date | None = None  # never published: grants' windows select records by it
    category: str | None = SQLField(default=None, max_length=100)
    attributes: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))
    # Never published: the depersonalise-only pseudonym of the record's person (linked records),
    # the end of its window (cohort membership: left), and special-category values that only
    # aggregates count.
    person: str | None = SQLField(default=None, max_length=128)
    occurred_until: date | None = None
    counted: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JSON))
    areas: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))
    # The published point's codes (records carry these; ``areas`` serves counting).
    point_areas: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JSON))
    outside_all: bool = False
    x: float | None = None
    y: float | None = None
    method: str = SQLField(default="none", max_length=16)
    k: float | None = None
    # Never published: the record's and its person's stable secret keys (cellkey.py), kept so that
    # per-record counting and the cube's key sums agree without the secret at read time.
    key: int = SQLField(default=0, sa_column=Column(SmallInteger, nullable=False, default=0))
    person_key: int | None = SQLField(default=None, sa_column=Column(SmallInteger))


CUBE_KEY = ("generation", "dataset", "layer", "dim", "fine", "provider", "at", "area", "value")


class CubeKey(Base):
    """The key of a cube cell (the columns of CUBE_KEY): the primary key, so cells are stored in
    key order (SQLite: WITHOUT ROWID) and a query's cells lie together."""

    generation: int = SQLField(primary_key=True)
    dataset: str = SQLField(primary_key=True, max_length=64)
    layer: str = SQLField(primary_key=True, max_length=64)
    dim: str = SQLField(primary_key=True, max_length=100)
    fine: bool = SQLField(primary_key=True)
    provider: str = SQLField(primary_key=True, max_length=64)
    at: date = SQLField(primary_key=True)
    area: str = SQLField(primary_key=True, max_length=64)
    value: str = SQLField(primary_key=True, sa_type=Text)


class CubeCell(CubeKey, table=True):
    """The count cube: live records of one generation × dataset × provider × layer × area × day
    or period × breakdown value, with the sum of their record keys.

    ``fine`` false: ``at`` is the period start at the dataset's time resolution; true: ``at`` is
    the record's day (kept so that a grant window cutting a period is answered exactly). ``dim``
    is the breakdown field (``""``: the total of every record); ``area`` ``""``: outside the
    layer; ``value`` ``""``: no value.
    """

    __tablename__ = "cube_cell"
    __table_args__ = {"sqlite_with_rowid": False}
    count: int = SQLField(sa_type=BigInteger, nullable=False)
    key_sum: int = SQLField(sa_type=BigInteger, nullable=False)
    # A total cell's row lacks a cover in some breakdown at threshold ``uncovered_for``
    # (cover_flags.py); both null until found, and on every other cell.
    uncovered: bool | None = SQLField(default=None, nullable=True)
    uncovered_for: int | None = SQLField(default=None, sa_type=SmallInteger, nullable=True)


class CubePerson(CubeKey, table=True):
    """The exact distinct people of each cube cell (linked datasets): ``count`` records of the
    person in the cell, ``person_key`` the person's key (never published)."""

    __tablename__ = "cube_person"
    __table_args__ = {"sqlite_with_rowid": False}
    person: str = SQLField(primary_key=True, max_length=128)
    person_key: int = SQLField(sa_type=SmallInteger, nullable=False)
    count: int = SQLField(sa_type=BigInteger, nullable=False)


class MaskingFigures(Base, table=True):
    """How far generalisation moved points, kept only as a histogram (never per record)."""

    __tablename__ = "masking_figures"
    __table_args__ = (UniqueConstraint("generation", "dataset", "provider"),)
    id: int | None = SQLField(default=None, primary_key=True)
    generation: int
    dataset: str = SQLField(max_length=64)
    provider: str = SQLField(max_length=64)
    displacement: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))


class ServiceState(Base, table=True):
    """The generation answers are served from, and the rebuild in progress (one row)."""

    __tablename__ = "service_state"
    id: int = SQLField(default=1, primary_key=True)
    generation: int = 1
    building: int | None = None
    layers_version: int = 0
    rebuild: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))


class ReleaseRow(Base, table=True):
    """Every answer released: what was asked and its disclosure figures, never the data."""

    __tablename__ = "release"
    id: str = SQLField(primary_key=True, max_length=32)
    kind: str = SQLField(max_length=32)
    dataset: str = SQLField(max_length=64)
    agency: str = SQLField(max_length=64)
    agreement: str | None = SQLField(default=None, max_length=64)
    query: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))
    disclosure: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime


# --- wire schemas -------------------------------------------------------------------------


class Event(BaseModel):
    event_id: int
    op: Literal["upsert", "delete"]
    dataset: str
    provider: str
    record_key: str = Field(min_length=1, max_length=128)
    revision: int
    batch_id: str | None = None
    received_at: str | None = None
    location_source: str | None = None
    easting: float | None = None
    northing: float | None = None
    record: dict[str, Any] = {}
    # The depersonalise-only pseudonym of the record's person (linked records only).
    person: str | None = Field(default=None, max_length=128)


class EventBatch(BaseModel):
    events: list[Event]


class EventResult(BaseModel):
    event_id: int
    status: Literal["stored", "deleted", "stale", "skipped"]


class EventsAnswer(BaseModel):
    results: list[EventResult]
    depersonalised: int


class DeriveRequest(BaseModel):
    from_layer: str = Field(alias="from", description="the child layer to dissolve")
    code_from: dict[str, Any] = Field(
        description='{"lookup": {child: parent}} or {"source": "code"|"name", "start", "end"}'
    )
    name_from: dict[str, Any] | None = None

    model_config = {"populate_by_name": True}


class Perturbation(BaseModel):
    method: Literal["cell-key"]
    max: int = Field(description="the largest change any published count may carry")


class SuppressionRule(BaseModel):
    threshold: int
    round_to: int | None
    secondary: bool
    perturbation: Perturbation | None = None


class AggregateCell(BaseModel):
    """One cell; with ``by=<field>`` other than category the cell has a member of that name."""

    area: str
    area_name: str | None
    period: str
    category: str | None = Field(default=None, description="with by=category")
    count: int | None = Field(description="null when suppressed")
    suppressed: Literal[True] | None = Field(
        default=None, description="true when suppressed (never why)"
    )
    rate: float | None = Field(default=None, description="per 1,000 people, with a population")


class ProtectionApplied(BaseModel):
    base_period: str | None
    base_layer: str | None
    per_provider: bool
    cover: bool
    rounded_to: int | None
    perturbation: Perturbation | None


class Disclosure(BaseModel):
    cells: int
    suppressed: int = Field(description="cells of this answer suppressed")
    suppressed_primary: None = Field(description="not published: the split would give cells away")
    suppressed_secondary: None
    min_published: int | None
    records: int | None = Field(description="null unless no cell is suppressed")
    records_outside_layer: int | None
    protection: Literal["release-lattice"]
    protected: ProtectionApplied


class AggregateTable(BaseModel):
    """``GET /v1/datasets/{dataset}/aggregates`` as JSON (CSV and GeoJSON carry the same cells)."""

    dataset: str
    geography: str
    period: str
    rule: SuppressionRule
    cells: list[AggregateCell]
    disclosure: Disclosure
    agreement: str | None
    release_id: str
    providers_left_out: list[str] = Field(
        default=[],
        description="cohort queries: providers holding records counted here, not granted",
    )
