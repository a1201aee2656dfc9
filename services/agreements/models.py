"""Tables of the agreements service and the request/response schemas of its API."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import JSON, Column, Index
from sqlalchemy.orm import registry
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from shared.levels import Level

AGENCY_CODE = r"^[a-z0-9][a-z0-9-]{1,63}$"
AgencyKind = Literal[
    "police",
    "fire",
    "health",
    "ambulance",
    "probation",
    "youth-justice",
    "local-authority",
    "housing",
    "education",
    "drug-alcohol",
    "transport-police",
    "other",
]
AgreementType = Literal["reciprocal", "one-way", "joint-controllers"]
OnwardSharing = Literal["prohibited", "with-provider-permission", "permitted"]
ActionName = Literal["push", "read", "retract"]


class Base(SQLModel, registry=registry()):
    pass


# ---------------------------------------------------------------- tables


class AgencyRow(Base, table=True):
    __tablename__ = "agency"

    code: str = SQLField(primary_key=True, max_length=64)
    name: str = SQLField(max_length=200)
    kind: str = SQLField(max_length=32)
    status: str = SQLField(default="active", max_length=16)
    created_at: datetime


class AgreementRow(Base, table=True):
    __tablename__ = "agreement"

    id: str = SQLField(primary_key=True, max_length=40)
    operator_state: str = SQLField(default="none", max_length=16)
    latest_version: int = 1
    created_at: datetime


class AgreementVersionRow(Base, table=True):
    __tablename__ = "agreement_version"

    agreement_id: str = SQLField(primary_key=True, foreign_key="agreement.id", max_length=40)
    version: int = SQLField(primary_key=True)
    terms: dict[str, Any] = SQLField(sa_column=Column(JSON, nullable=False))
    created_at: datetime
    created_by: str = SQLField(max_length=64)


class PartyRow(Base, table=True):
    """Who is party to which version: lets an agency's list be one indexed query."""

    __tablename__ = "agreement_party"
    __table_args__ = (Index("ix_agreement_party_agency", "agency", "agreement_id"),)

    agreement_id: str = SQLField(primary_key=True, max_length=40)
    version: int = SQLField(primary_key=True)
    agency: str = SQLField(primary_key=True, max_length=64)


class SignatureRow(Base, table=True):
    __tablename__ = "agreement_signature"

    agreement_id: str = SQLField(primary_key=True, max_length=40)
    version: int = SQLField(primary_key=True)
    agency: str = SQLField(primary_key=True, max_length=64)
    signatory: str = SQLField(max_length=200)
    signed_at: datetime


class HistoryRow(Base, table=True):
    __tablename__ = "agreement_history"

    id: int | None = SQLField(default=None, primary_key=True)
    agreement_id: str = SQLField(index=True, max_length=40)
    version: int
    at: datetime
    actor: str = SQLField(max_length=64)
    event: str = SQLField(max_length=32)
    detail: dict[str, Any] = SQLField(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DecisionRow(Base, table=True):
    __tablename__ = "decision_log"
    __table_args__ = (Index("ix_decision_log_agreement", "agreement_id"),)

    id: int | None = SQLField(default=None, primary_key=True)
    at: datetime = SQLField(index=True)
    agency: str = SQLField(max_length=64)
    action: str = SQLField(max_length=16)
    dataset: str = SQLField(max_length=100)
    level: str | None = SQLField(default=None, max_length=16)
    purpose: str | None = SQLField(default=None, max_length=100)
    allow: bool
    rule: str = SQLField(max_length=40)
    agreement_id: str | None = SQLField(default=None, max_length=40)
    version: int | None = None
    explain: bool = SQLField(default=False, description="asked through /v1/decisions, no access")


class GenerationRow(Base, table=True):
    """One row whose value grows on every change, so each replica knows when to reload."""

    __tablename__ = "agreements_generation"

    id: int = SQLField(primary_key=True)
    value: int = 0


# ---------------------------------------------------------------- API schemas


class AgencyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=AGENCY_CODE)
    name: str = Field(min_length=1, max_length=200)
    kind: AgencyKind


class AgencyPublic(BaseModel):
    code: str
    name: str
    kind: str
    status: str


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=100)
    level: Level
    fields: list[str] | None = Field(default=None, description="allow-list; absent = every field")


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agency: str | None = None
    role: str = Field(default="", max_length=200, description="e.g. data protection officer")
    name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=254)


class AgreementCreate(BaseModel):
    """The create body of DESIGN section 3; every member after ``retention_days`` is optional."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    purpose: str = Field(min_length=1, max_length=100)
    legal_basis: list[str] = Field(min_length=1)
    providers: list[str] = Field(min_length=1)
    recipients: list[str] = Field(min_length=1)
    datasets: list[DatasetEntry] = Field(min_length=1)
    start: date
    end: date
    review_by: date | None = None
    retention_days: int = Field(default=365, ge=1, le=36500)
    type: AgreementType | None = None
    purpose_description: str = Field(default="", max_length=4000)
    onward_sharing: OnwardSharing = "with-provider-permission"
    dpia_reference: str | None = Field(default=None, max_length=200)
    contacts: list[Contact] = []

    @field_validator("providers", "recipients")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not re.match(AGENCY_CODE, code):
                raise ValueError(f"{code!r} is not an agency code")
        return value


class DryRunBody(AgreementCreate):
    days: int = Field(default=30, ge=1, le=366)


class SignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signatory: str | None = Field(default=None, min_length=1, max_length=200)


class DecisionQuery(BaseModel):
    """``POST /v1/decisions``: the caller's own agency comes from the token."""

    model_config = ConfigDict(extra="forbid")

    action: ActionName
    dataset: str = Field(min_length=1, max_length=100)
    level: Level | None = None
    purpose: str | None = Field(default=None, max_length=100)
    fields: list[str] | None = None


class InternalDecisionQuery(BaseModel):
    """``POST /internal/decisions``: the gateway passes what the client asked, unchecked.

    An unknown level or a missing dataset is denied by the decision rather than refused with 422,
    so the gateway can answer the client with the rule.
    """

    model_config = ConfigDict(extra="ignore")

    agency: str = Field(min_length=1, max_length=64)
    action: ActionName
    dataset: str | None = Field(default=None, max_length=100)
    level: str | None = Field(default=None, max_length=32)
    purpose: str | None = Field(default=None, max_length=100)
    fields: list[str] | None = None


class GrantPublic(BaseModel):
    """One provider's slice of a read: its records reach the caller only within these terms."""

    model_config = ConfigDict(populate_by_name=True)

    provider: str
    agreement: str
    version: int
    level: str
    fields: list[str] | None
    from_: str = Field(alias="from")
    to: str
    purpose: str


class DecisionPublic(BaseModel):
    allow: bool
    rule: str
    agreement: str | None
    version: int | None
    fields: list[str] | None
    providers: list[str] | None
    purpose: str | None
    retention_days: int | None
    window: list[str] | None
    warning: str | None
    grants: list[GrantPublic] = []


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None
