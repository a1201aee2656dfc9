"""The gateway's tables: API key hashes and the hash-chained audit log with its checkpoints."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class Base(SQLModel, registry=registry()):
    pass


class ApiKey(Base, table=True):
    __tablename__ = "api_key"

    key_id: str = Field(primary_key=True, max_length=64)
    agency: str = Field(index=True, max_length=64)
    roles: str = Field(max_length=200, description="comma-separated")
    key_hash: str = Field(max_length=64, description="hex SHA-256 of the whole key")
    created_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None
    holder: str | None = Field(default=None, max_length=200, description="the person it is for")
    scopes: str | None = Field(
        default=None, max_length=100, description="comma-separated; null: every scope allowed"
    )
    expires_at: float | None = None
    origin: str | None = Field(
        default=None, max_length=16, description="'start': installed at gateway start"
    )


class AuditEntry(Base, table=True):
    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_at", "at"), Index("ix_audit_entry_agency", "agency"))

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: str = Field(max_length=32)
    request_id: str = Field(max_length=128)
    phase: str = Field(max_length=16)
    agency: str | None = Field(default=None, max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    method: str = Field(max_length=10)
    route: str = Field(max_length=200)
    dataset: str | None = Field(default=None, max_length=100, index=True)
    action: str | None = Field(default=None, max_length=20)
    level: str | None = Field(default=None, max_length=20)
    purpose: str | None = Field(default=None, max_length=100)
    rule: str | None = Field(default=None, max_length=100)
    agreement: str | None = Field(default=None, max_length=100)
    version: int | None = None
    providers: str | None = Field(default=None, description="',a,b,' so LIKE '%,a,%' finds one")
    status: int | None = None
    outcome: str = Field(max_length=16)
    records: int | None = None
    reason: str | None = Field(default=None, max_length=300)
    digest: str = Field(max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    redacted_at: str | None = Field(
        default=None, max_length=32, description="set when the body was erased; digest kept"
    )


class AuditHead(Base, table=True):
    """One row: the chain head, locked by each writer so replicas extend one chain."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True)
    seq: int = 0
    hash: str = Field(max_length=64)
    checkpoint_seq: int = 0
    checkpoint_at: float = 0.0
    # The Merkle tree's right edge (services/gateway/merkle.py); NULL until built from the log.
    frontier: str | None = Field(default=None, sa_type=Text)


class AuditCheckpoint(Base, table=True):
    __tablename__ = "audit_checkpoint"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: str = Field(max_length=64)
    at: str = Field(max_length=32)
    signing_key_id: str = Field(max_length=32)
    signature: str = Field(max_length=200)
    # The signed RFC 6962 tree head at this checkpoint (tree size = seq).
    root: str | None = Field(default=None, max_length=64)
    timestamp: int | None = Field(default=None, sa_type=BigInteger)
    tree_signature: str | None = Field(default=None, max_length=200)


class AuditTreeNode(Base, table=True):
    """The root of each perfect subtree of the audit's Merkle tree from merkle.STORED_LEVEL up."""

    __tablename__ = "audit_tree_node"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: str = Field(max_length=64)


class AuditSigningKey(Base, table=True):
    """Public keys of every checkpoint signer; the private seed only when generated here."""

    __tablename__ = "audit_signing_key"

    key_id: str = Field(primary_key=True, max_length=32)
    public_key: str = Field(max_length=100)
    private_seed: str | None = Field(default=None, max_length=100)
    created_at: float


class AuditImport(Base, table=True):
    """How far the audit has taken in a backend's own log (the ingest purge log), by its ids."""

    __tablename__ = "audit_import"

    source: str = Field(primary_key=True, max_length=32)
    last_id: int = 0
