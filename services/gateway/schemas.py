"""Shapes of the gateway's own answers (for the OpenAPI document and the tests)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    # The signed RFC 6962 tree head: size (= seq), root, and the Ed25519 signature of its
    # TreeHeadSignature (version 0, type 1, timestamp ms, size, root). Null only before the tree.
    tree_size: int | None = None
    root: str | None = None
    timestamp: int | None = None
    tree_signature: str | None = None

    @model_validator(mode="after")
    def _size(self) -> Checkpoint:
        if self.root is not None:
            self.tree_size = self.seq
        return self


class CheckpointPage(BaseModel):
    checkpoints: list[Checkpoint]
    public_keys: dict[str, str]  # signing key id -> base64 raw Ed25519 public key
    next: int | None


class ConsistencyProof(BaseModel):
    """That the log at ``second`` extends the log at ``first`` unchanged: ``proof``, the RFC 6962
    consistency proof between their tree heads (O(log n) hashes), and, unless asked not to, the
    entry digests in between (chaining them onto the first hash gives the second's)."""

    first: Checkpoint
    second: Checkpoint
    digests: list[str] | None
    proof: list[str]


class InclusionProof(BaseModel):
    """That entry ``seq`` (leaf ``leaf_index``) is in the tree of the checkpoint ``tree_size``."""

    seq: int
    digest: str
    leaf_index: int
    leaf_hash: str
    tree_size: int
    proof: list[str]
    checkpoint: Checkpoint
