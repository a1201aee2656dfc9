"""Shapes of the gateway's own answers (for the OpenAPI document and the tests)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class KeyIssued(BaseModel):
    key_id: str
    key: str


class AuditRecord(BaseModel):
    seq: int
    at: str
    request_id: str
    phase: Literal["intent", "complete", "retention"]
    agency: str | None
    key_id: str | None
    method: str
    route: str
    dataset: str | None
    action: str | None
    level: str | None
    purpose: str | None
    rule: str | None
    agreement: str | None
    version: int | None
    providers: list[str] | None
    status: int | None
    outcome: Literal["allowed", "denied", "error", "pending"]
    records: int | None
    digest: str
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditRecord]
    next: int | None


class ChainCheck(BaseModel):
    ok: bool
    entries: int | None = None
    head: str | None = None
    first_bad_entry: int | None = None
    reason: str | None = None
