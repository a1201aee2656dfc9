"""Shapes of the gateway's own answers (for the OpenAPI document and the tests)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["push", "read", "sign", "admin"]


class KeyRequest(BaseModel):
    """What a new key may do and whom it is for; every member optional."""

    model_config = ConfigDict(extra="forbid")

    holder: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$"
    )
    scopes: list[Scope] | None = Field(default=None, min_length=1, max_length=4)
    expires: date | datetime | None = Field(
        default=None, description="a date: the key works through that day (UTC)"
    )


class KeyIssued(BaseModel):
    key_id: str
    key: str
    holder: str | None = None
    scopes: list[str] = []
    expires: str | None = None


class AccessToken(BaseModel):
    """An OAuth2 access token (RFC 6749 5.1): a JWT the hub signed, used as a bearer."""

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6749 token type
    expires_in: int
    scope: str


class TokenError(BaseModel):
    """An OAuth2 error (RFC 6749 5.2) with the problem members beside it."""

    error: Literal["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]
    error_description: str
    type: str
    title: str
    status: int
    detail: str


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
    reason: str | None = None  # the CSP-Reason of a case-view read
    digest: str
    prev_hash: str
    hash: str
    redacted_at: str | None = None


class AuditPage(BaseModel):
    entries: list[AuditRecord]
    next: int | None


class ChainCheck(BaseModel):
    ok: bool
    entries: int | None = None
    head: str | None = None
    first_bad_entry: int | None = None
    reason: str | None = None
    checkpoint: int | None = None  # the last signed checkpoint verified


class Checkpoint(BaseModel):
    seq: int
    hash: str
    at: str
    signing_key_id: str
    signature: str


class CheckpointPage(BaseModel):
    checkpoints: list[Checkpoint]
    public_keys: dict[str, str]  # signing key id -> base64 raw Ed25519 public key
    next: int | None


class ConsistencyProof(BaseModel):
    """Entry digests from ``first`` (exclusive) to ``second``: chaining them onto the first
    checkpoint's hash gives the second's, so the log only grew between the two."""

    first: Checkpoint
    second: Checkpoint
    digests: list[str]
